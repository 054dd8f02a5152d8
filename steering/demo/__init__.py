"""``steering demo``: the whole system on loopback, with simulated regions you can break and heal."""
