"""How the network is run: the backend policy (more of the runtime moves here with the layout work)."""
