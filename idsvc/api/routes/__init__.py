"""One router per resource; every router except ``ops`` depends on a bearer token."""
