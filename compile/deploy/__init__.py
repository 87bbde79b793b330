"""Deploy: artifacts on devices — RPC trackers and servers, placing jobs on every device under
a key (or this machine), and the bench and profile jobs with their reports."""
