"""The bounded load run (`make soak`) and what it and the fault tests share: the whole platform as real
processes on loopback (PostgreSQL, Kafka, the three services), signed tokens, and realistic inbound messages."""
