# Loads the project's Vagrantfile with a stand-in for Vagrant's configuration DSL and prints,
# as JSON, what it would define: the box and, per machine, its address, resources and
# provisioners. Run as: ruby vagrantfile_probe.rb PROJECT_DIR (env as for vagrant).
require "json"

class Recorder
  attr_reader :calls

  def initialize
    @calls = {}
  end

  def method_missing(name, *args, **kwargs, &block)
    key = name.to_s
    if key.end_with?("=")
      @calls[key.chomp("=")] = args.first
      return
    end
    child = (@calls[key] ||= Recorder.new)
    if block
      sub = Recorder.new
      block.call(sub)
      (@calls["#{key}:blocks"] ||= []) << { "args" => args, "kwargs" => kwargs, "calls" => sub.to_h }
    elsif !args.empty? || !kwargs.empty?
      (@calls["#{key}:calls"] ||= []) << { "args" => args, "kwargs" => kwargs }
    end
    child
  end

  def respond_to_missing?(*)
    true
  end

  def to_h
    @calls.transform_values { |v| v.is_a?(Recorder) ? v.to_h : v }
  end
end

module Vagrant
  def self.configure(_version)
    config = Recorder.new
    machines = {}
    vm = config.vm
    vm.define_singleton_method(:define) do |name, &block|
      node = Recorder.new
      block.call(node)
      machines[name] = node.to_h
    end
    yield config
    puts JSON.generate("box" => config.to_h["vm"]["box"], "machines" => machines)
  end
end

Dir.chdir(ARGV.fetch(0)) { load File.join(ARGV.fetch(0), "Vagrantfile") }
