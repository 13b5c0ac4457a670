"""The operations in labsim's journal that change the lab: a Retry may repeat reads, never these
(the drill tier's and the worker's Retry tests both hold it to that)."""

ACTING = frozenset(
    {
        "puppet-code.deploy",
        "puppet.infrastructure.provision",
        "puppet.infrastructure.enable",
        "puppet.infrastructure.configure",
        "puppet.access.login",
        "puppet.job.run",
        "gitlab.rails-runner",
    }
)
