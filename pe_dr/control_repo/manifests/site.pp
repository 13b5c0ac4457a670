# The control repo pe-dr-drill pushes to GitLab: enough for Code Manager and the drill's checks.
node default {
}
