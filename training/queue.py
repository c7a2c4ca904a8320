"""A multi-agent contact queue with shifts, priorities and impatient customers (discrete events).

One pool of agents per synchronous channel (phone, chat, other). Staffing is a number of agents
per channel and hour; when it drops, busy agents finish their contact first. A free agent takes
the waiting contact with the lowest priority value (FIFO: the arrival time). Customers are
impatient: each has a patience, and one still waiting when it runs out abandons (wait = patience).

The simulator's abandonment law ``odds = exp(-4 + 1.3 ln(wait / 60 s))`` is the CDF of a
log-logistic patience (scale 60 s x e^(4/1.3), shape 1.3): a customer whose wait would be ``w``
abandons with exactly the law's chance. A callback offer multiplies those odds by 0.35, i.e.
stretches the patience of the customers it reaches by ``0.35^(-1/1.3)``.

The same engine runs every policy: FIFO is "priority = arrival time". That, and the common random
numbers of :mod:`training.policy`, make a policy identical to FIFO give identical outcomes.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

ABANDON_INTERCEPT = -4.0
ABANDON_SLOPE = 1.3
CALLBACK_ODDS = 0.35
CALLBACK_AFTER_SECONDS = 120.0
HOUR = 3600.0


def patience_from_uniform(v: np.ndarray) -> np.ndarray:
    """Log-logistic patience whose CDF is the simulator's abandonment chance at each wait."""
    v = np.clip(v, 1e-12, 1 - 1e-12)
    return 60.0 * np.exp((np.log(v / (1 - v)) - ABANDON_INTERCEPT) / ABANDON_SLOPE)


def with_callback(patience: np.ndarray, offered: np.ndarray) -> np.ndarray:
    """Patience after a callback offer at 120 s (odds x 0.35) for those still waiting then."""
    stretch = CALLBACK_ODDS ** (-1.0 / ABANDON_SLOPE)
    return np.where(offered & (patience > CALLBACK_AFTER_SECONDS), patience * stretch, patience)


def serve_pool(
    arrival: np.ndarray,
    service: np.ndarray,
    patience: np.ndarray,
    priority: np.ndarray,
    agents_by_hour: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Queue waits (s) and abandonment of one pool. ``arrival`` sorted, seconds from the start."""
    n = len(arrival)
    wait = np.zeros(n)
    abandoned = np.zeros(n, dtype=bool)
    arrival_l = arrival.tolist()
    service_l = service.tolist()
    patience_l = patience.tolist()
    priority_l = priority.tolist()
    agents = agents_by_hour.tolist()
    last_hour = len(agents) - 1
    busy: list[float] = []
    waiting: list[tuple[float, int]] = []
    i = 0
    now = 0.0
    inf = math.inf
    while i < n or waiting:
        t_arrival = arrival_l[i] if i < n else inf
        t_done = busy[0] if busy else inf
        t_hour = (math.floor(now / HOUR) + 1) * HOUR if waiting else inf
        now = min(t_arrival, t_done, t_hour)
        if now == inf:
            break
        while busy and busy[0] <= now:
            heapq.heappop(busy)
        while i < n and arrival_l[i] <= now:
            heapq.heappush(waiting, (priority_l[i], i))
            i += 1
        capacity = agents[min(int(now // HOUR), last_hour)]
        while waiting and len(busy) < capacity:
            _, j = heapq.heappop(waiting)
            waited = now - arrival_l[j]
            if waited > patience_l[j]:
                abandoned[j] = True
                wait[j] = patience_l[j]
                continue
            wait[j] = waited
            heapq.heappush(busy, now + service_l[j])
    for _, j in waiting:  # still waiting at the end: they leave when their patience runs out
        abandoned[j] = True
        wait[j] = patience_l[j]
    return wait, abandoned
