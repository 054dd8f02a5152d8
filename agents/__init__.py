"""The health agent: probes one region or cache site and streams reports to the controller.

``steering agent --config agent.yaml`` (see ``agents/README.md``).
"""
