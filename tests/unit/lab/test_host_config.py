"""Host: a missing SSH key is a configuration error (exit 2), found before any connection.

(An unreachable host is transient: tests/unit/lab/test_lab_hosts.py.)
"""

from __future__ import annotations

import pytest

from pe_dr.errors import ConfigError, is_transient
from pe_dr.lab.host import Host
from pe_dr.parsing.vagrant import SSHParams


def test_a_missing_key_file_is_a_configuration_error_not_a_retry() -> None:
    host = Host("primary.vm", SSHParams("127.0.0.1", 1, "vagrant", "/nonexistent/private_key"))
    with pytest.raises(ConfigError) as err:
        host.run(["true"])
    assert "/nonexistent/private_key" in str(err.value)
    assert "vagrant ssh-config primary.vm" in str(err.value)
    assert not is_transient(err.value)
