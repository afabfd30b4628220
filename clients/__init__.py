"""fedkt's Flower ClientApp: the same app runs in simulation and on real SuperNodes."""
