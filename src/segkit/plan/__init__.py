"""Planning a run: the data's fingerprint, the machine probe, the rules, the race of candidate
networks on the user's data, the budget, and plan.yaml (see ``configure.self_configure``)."""
