"""Kombu's own Redis keys, as its Redis transport (kombu 5.7) names them with askq's settings
(no key prefix). All of askq's own keys are in askq/core/keys.py.

The queue list itself is named by `Settings.queue`. Kombu writes and reads these; askq reads
them (the reaper's unacked sweep, askq/broker/unacked.py) and, in two scripts that settle an
abandoned entry (askq/core/scripts.py RECOVER, RESTORE_SUBMISSION), removes entries from them.
"""

from __future__ import annotations

# HASH delivery tag -> JSON [envelope, exchange, routing key] of every message delivered to a
# consumer and not yet acked — owner: kombu (QoS.append on delivery, ack removes); no TTL.
UNACKED = "unacked"
# ZSET delivery tag -> delivery time (epoch seconds) of the same entries — owner: kombu; no TTL.
UNACKED_INDEX = "unacked_index"
# STRING lock kombu takes while restoring entries past visibility_timeout — owner: kombu.
UNACKED_MUTEX = "unacked_mutex"
# SET of the routes to a queue — owner: kombu (one per declared queue); no TTL.
BINDING_PREFIX = "_kombu.binding."
