"""Generated gRPC code for proto/steering/v1 (``make proto``); do not edit."""
