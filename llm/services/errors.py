"""The errors services raise. Each `InvalidPayload` is a request that can never succeed: the
tasks do not retry it and nothing was written."""

from llm.payloads import InvalidPayload


class UnknownTenant(InvalidPayload):
    pass


class AmbiguousTenant(ValueError):
    """A tenant named on a command line by a name that several tenants share."""


class CostLimitExceeded(InvalidPayload):
    pass


class UnknownJob(InvalidPayload):
    pass


class InvalidBatch(InvalidPayload):
    pass


class ForcedFailure(RuntimeError):
    """Raised on request after the api-call insert, to prove the unit of work is atomic."""
