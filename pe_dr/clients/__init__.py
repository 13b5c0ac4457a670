"""The lab's HTTP APIs: PE's (RBAC, classifier, Code Manager, status, PuppetDB) and GitLab's."""
