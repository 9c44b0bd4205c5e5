"""Password guessing against `users`/`shared_key` costs a host time: each failure doubles its wait."""

from agent.inputs.forward import AUTH_PENALTY, MAX_AUTH_PENALTY, AuthThrottle
from agent.inputs.forward import throttle as forward


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_failure_doubles_the_hosts_wait_up_to_the_cap_and_a_success_clears_it():
    clock = Clock()
    throttle = AuthThrottle(clock)
    assert throttle.wait("10.0.0.1") == 0.0
    waits = []
    for _ in range(12):
        throttle.failed("10.0.0.1")
        waits.append(throttle.wait("10.0.0.1"))
        clock.now += waits[-1]  # the guesser waits it out, every time
    assert waits[:4] == [AUTH_PENALTY, 2 * AUTH_PENALTY, 4 * AUTH_PENALTY, 8 * AUTH_PENALTY]
    assert max(waits) == MAX_AUTH_PENALTY
    # 12 guesses took minutes, not the 2.6 ms they took at 4,600 a second
    assert sum(waits) > 150
    assert throttle.wait("10.0.0.2") == 0.0  # another host is not held back
    throttle.passed("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 0.0


def test_the_hosts_remembered_are_bounded(monkeypatch):
    monkeypatch.setattr(forward, "MAX_THROTTLED_HOSTS", 100)
    throttle = AuthThrottle(Clock())
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle._hosts) <= 100
    assert throttle.wait("10.0.3.231") > 0  # the newest are kept
