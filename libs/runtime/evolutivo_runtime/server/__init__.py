"""gRPC server bootstrap: lifecycle, health, reflection, interceptors and the admin services."""

from typing import Any, TypeAlias

import grpc

# What every servicer method receives; one alias so services need not spell the generics.
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
