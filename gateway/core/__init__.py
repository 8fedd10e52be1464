"""Protocol-neutral core: request types, signatures, the batcher, the registry and its
routing, the DataPlane, statistics, metrics, errors and the decode budget. Imports no
front end (http, grpc) and no loop."""
