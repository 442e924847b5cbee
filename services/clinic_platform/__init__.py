"""The shared kit every Clinic Mesh service is built on.

settings (environment), logging (JSON, request id), errors (domain errors -> gRPC status),
server (grpc.aio bootstrap: health, reflection, interceptors, graceful SIGTERM), db (async
SQLAlchemy + Alembic), events (CloudEvents envelope), outbox (transactional outbox + relay),
consumer (inbox-deduplicated event consumer with DLQ), pagination (AIP-158 page tokens).
"""
