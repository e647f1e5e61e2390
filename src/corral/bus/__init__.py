"""How the controller reaches agents: a Protocol, and an in-process link for one host."""
