"""A discrete-event simulator of devices and edges, for what the emulator cannot run:
edges faster than this host, and fleets of up to 1,000 devices.

    Simulation (engine.py): simulated seconds, an event heap
    SimDevice (device.py): the runtime's own Planner and DeviceKnowledge on that clock;
        device times from the card × the device profile's factors
    SimUplink (link.py): the Mahimahi traces with the emulated link's delivery model
    SimEdge (edge.py): the server's queue, batching and per-device share over an edge
        profile (this host, measured; a many-core CPU and a GPU, published)
    validate.py: the simulator against the emulated grid, cell by cell
    fleet.py: fleets of devices on 1, 2 or 4 replicas, every policy

``python -m experiments.sim --help`` lists the commands.
"""
