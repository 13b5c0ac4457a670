# A stand-in vagrant provider for tests (tests/unit/lab/test_vagrantfile.py): answers `not_created`
# for every VM, so the real `vagrant status` reads the project Vagrantfile without VirtualBox.
class PeDrTestProvider < Vagrant.plugin("2", :provider)
  def initialize(machine); @machine = machine; end
  def state
    Vagrant::MachineState.new(:not_created, "not created", "not created")
  end
  def action(_name); nil; end
  def ssh_info; nil; end
end
class PeDrTestPlugin < Vagrant.plugin("2")
  name "pe-dr-test-provider"
  provider(:pedrtest) { PeDrTestProvider }
end
