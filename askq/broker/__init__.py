"""Everything askq knows of kombu and Celery's wire format and internals, in one package.

- envelope: Celery's protocol-2 message for the answer task (build, check, locate a job in it);
- keys: kombu's own Redis keys (its unacked bookkeeping, bindings);
- queues: a queue's depth as kombu stores it;
- unacked: reading kombu's unacked entries (the reaper settles abandoned ones);
- transport, consumer: kombu's Redis transport and Celery's consumer, refusing what askq will
  not run (askq/workers/refusals.py binds the refusals to the dead-letter queue);
- private: the private kombu and Celery methods overridden or called, with their signatures;
- monitor: the Celery configuration Flower runs with (a plain redis broker URL).

Placement: askq's job store enqueues (SUBMIT, replay and the reaper build a message in the same
atomic script as the job record), so the wire format sits under askq.core: this package may
import askq.errors and askq.config only (nothing of askq.core), and askq.core,
the producers and the workers import it. Only this package imports kombu
(tests/test_architecture.py). kombu and celery are pinned to the minor versions tested.
"""
