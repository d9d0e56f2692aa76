"""Security tests: the access-control matrix over every route of every service, hostile and malformed input
(hypothesis, schemathesis, injection, size limits), and patient data kept out of the logs."""
