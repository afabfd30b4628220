"""fedkt's Flower ServerApp: round loop, results, simulation launcher."""
