"""The gRPC front end (KServe v2 / Triton's ``inference.GRPCInferenceService``) on grpc.aio,
over the generated code that ships in the tritonclient wheel: codec (protobuf tensors to and
from the core's types), errors (one mapping to status codes), the servicer (thin, over the
same DataPlane as HTTP), health (``grpc.health.v1`` following readiness) and the server."""
