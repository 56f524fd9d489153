"""Tool pinning and tool-poisoning checks: what a backend offers is shown only once trusted."""
