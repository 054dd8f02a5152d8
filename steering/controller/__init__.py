"""The controller: ingest agents' reports, elect a leader, plan and publish routing tables.

docs/architecture.md §1: every replica ingests and serves the API; the elected leader
plans (``steering.planner``) and publishes ``routing/current`` fenced by its
leadership key.
"""
