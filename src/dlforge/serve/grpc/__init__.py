"""The KServe V2 gRPC front door (`--grpc-port`): the same models, batchers, tokens and metrics as HTTP."""
