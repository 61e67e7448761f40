"""Generated protobuf code for grpc_predict_v2.proto (`make proto`); do not edit by hand."""
