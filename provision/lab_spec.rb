# The lab spec, read by the Vagrantfile: the same TOML file pe-dr reads (pe_dr/lab/spec.py), so one
# file describes the lab. pe-dr passes the spec it runs with as PE_DR_LAB_TOML (its own TOML
# text); by hand, PE_DR_LAB_SPEC names the file; without either, the tutorial's lab.
#
# Ruby has no TOML parser in its standard library, so this reads the subset pe-dr writes
# (`key = "string" | integer | true | false`, comments, `[[hosts]]` tables) and refuses anything
# else with the line, rather than guess.
module PeDrLab
  # PE needs 8 GB on its servers; the defaults of pe_dr/lab/spec.py (a test compares them)
  MEMORY = { "primary" => 8192, "replica" => 8192, "gitlab" => 6144, "agent" => 2048 }.freeze

  TUTORIAL = <<~TOML.freeze
    [[hosts]]
    name = "primary.vm"
    role = "primary"
    address = "192.168.50.4"
    [[hosts]]
    name = "replica.vm"
    role = "replica"
    address = "192.168.50.41"
    [[hosts]]
    name = "linux.vm"
    role = "agent"
    address = "192.168.50.6"
    [[hosts]]
    name = "gitlab.vm"
    role = "gitlab"
    address = "192.168.50.7"
  TOML

  TOP_DEFAULTS = {
    "box" => "ubuntu/jammy64", "pe_version" => "2025.8.0", "pe_download_url" => "",
    "gitlab_http_port" => 80
  }.freeze

  def self.load(env = ENV)
    if env["PE_DR_LAB_TOML"] && !env["PE_DR_LAB_TOML"].empty?
      parse(env["PE_DR_LAB_TOML"], "PE_DR_LAB_TOML")
    elsif env["PE_DR_LAB_SPEC"] && !env["PE_DR_LAB_SPEC"].empty?
      parse(File.read(env["PE_DR_LAB_SPEC"], encoding: "UTF-8"), env["PE_DR_LAB_SPEC"])
    else
      parse(TUTORIAL, "the tutorial's lab")
    end
  end

  def self.parse(text, source)
    top = TOP_DEFAULTS.dup
    hosts = []
    current = top
    text.each_line.with_index(1) do |raw, number|
      line = raw.sub(/\s+#.*\z/, "").strip
      next if line.empty? || line.start_with?("#")
      if line == "[[hosts]]"
        current = {}
        hosts << current
        next
      end
      match = /\A([a-z_]+)\s*=\s*(.+)\z/.match(line)
      raise ArgumentError, "lab spec #{source} line #{number}: not understood: #{line}" unless match
      current[match[1]] = value(match[2], source, number)
    end
    complete(top, hosts, source)
  end

  def self.value(text, source, number)
    case text
    when /\A"((?:[^"\\]|\\.)*)"\z/ then Regexp.last_match(1).gsub(/\\(.)/, '\1')
    when /\A-?\d+\z/ then Integer(text, 10)
    when "true" then true
    when "false" then false
    else raise ArgumentError, "lab spec #{source} line #{number}: not a string or number: #{text}"
    end
  end

  def self.complete(top, hosts, source)
    hosts = hosts.map do |h|
      %w[name role address].each do |key|
        raise ArgumentError, "lab spec #{source}: a host has no #{key}" unless h[key]
      end
      h.merge("memory_mb" => h["memory_mb"] || MEMORY.fetch(h["role"]),
              "cpus" => h["cpus"] || (h["role"] == "agent" ? 1 : 2))
    end
    primaries = hosts.select { |h| h["role"] == "primary" }
    raise ArgumentError, "lab spec #{source}: the lab needs exactly one primary" if primaries.size != 1

    top.merge("hosts" => hosts, "primary" => primaries.first["name"])
  end

  # The provisioning script of a VM: the VM that is PE's primary now (PE_DR_PRIMARY, set by
  # pe-dr after a promotion) installs PE; GitLab its own; every other VM, the lost primary rebuilt
  # as the promoted one's replica included, starts as an agent of that primary.
  def self.script(host, primary)
    return "provision/primary.sh" if host["name"] == primary
    return "provision/gitlab.sh" if host["role"] == "gitlab"

    "provision/agent.sh"
  end
end
