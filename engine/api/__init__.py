"""The gRPC edge: validation, the servicers (protobuf in, protobuf out), the interceptor
that maps the error tree to status codes, and the server."""
