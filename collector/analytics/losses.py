"""Downtime from a machine's stored state: its spans classified with the site's loss mapping,
its stop events, their Pareto, and its time in each state.

Pure: the caller reads the spans (and the operators' reclassifications) from the database and
passes them in; nothing here reads a clock. docs/analytics.md gives every rule.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Literal

from collector.analytics.equipment import (
    ISO_22400_ELEMENT,
    TPM_DEFAULT,
    LossMapping,
    ReasonMapping,
    StateMapping,
    TimeElement,
    TpmLoss,
    code_key,
)

Code = bool | int | float | str
"""A value of a state or reason tag, compared as `code_key` compares it."""
CodeKey = tuple[str, Code]


@dataclass(frozen=True, slots=True)
class StateSpan:
    """A span [start, end) of unchanged state, reason and product codes (UTC datetimes)."""

    start: datetime
    end: datetime
    state: Code
    reason: Code | None
    product: str | None
    open: bool = False
    """It is still going on: `end` is the time it is known up to (now)."""


@dataclass(frozen=True, slots=True)
class Reclassification:
    """A stop's reason as an operator set it afterwards, with who and when."""

    reason: Code
    actor: str
    actor_name: str | None
    at: datetime
    note: str | None


@dataclass(frozen=True, slots=True)
class StopEvent:
    """A stop: touching spans of one state that is not production, classified as one."""

    start: datetime
    end: datetime | None
    """None while it goes on."""
    duration_s: float
    """Its whole length (so far, while it goes on), not clipped to any window."""
    state: Code
    state_name: str
    reason: Code | None
    reason_name: str | None
    """The reason's name in the loss mapping (None: a code the mapping lacks, or no reason)."""
    element: TimeElement
    tpm: TpmLoss | None
    minor: bool
    """A minor stoppage (a delay shorter than the microstop threshold, or one whose loss is
    minor_stop)."""
    reclassified: Reclassification | None

    @property
    def until(self) -> datetime:
        """Its end, or the time it is known up to while it goes on."""
        return self.end or self.start + timedelta(seconds=self.duration_s)


@dataclass(frozen=True, slots=True)
class Labelled:
    """Spans classified: the stop events, and per span its time element (None: unmapped
    state) and whether it belongs to a minor stoppage."""

    events: list[StopEvent]
    elements: list[TimeElement | None]
    minor: list[bool]


class Classifier:
    """A site's loss mapping, indexed by code."""

    def __init__(self, mapping: LossMapping) -> None:
        self.mapping = mapping
        self._states = {
            code_key(value): state for state in mapping.states for value in state.values
        }
        self._reasons = {code_key(reason.value): reason for reason in mapping.reasons}
        self._keys: dict[tuple[type, Code], CodeKey] = {}

    def key(self, code: Code) -> CodeKey:
        """code_key(code), worked out once per distinct code (a machine has few)."""
        # The type is part of the key: True == 1 and 2.0 == 2, but their keys differ.
        typed = (code.__class__, code)
        found = self._keys.get(typed)
        if found is None:
            found = self._keys[typed] = code_key(code)
        return found

    def state(self, code: Code) -> StateMapping | None:
        """What a state code means (None: the mapping lacks it)."""
        return self.keyed_state(self.key(code))

    def keyed_state(self, key: CodeKey) -> StateMapping | None:
        """What the state code of this key() means (None: the mapping lacks it)."""
        return self._states.get(key)

    def reason(self, code: Code | None) -> ReasonMapping | None:
        """What a reason code means (None: no code, or the mapping lacks it)."""
        return None if code is None else self._reasons.get(self.key(code))

    def stop(
        self, state: StateMapping, found: ReasonMapping | None
    ) -> tuple[TimeElement, TpmLoss | None]:
        """Where a stop's time goes: the element and loss of its reason (as reason() found it)
        while the reason applies to the state, else the state's; a missing loss is the
        element's default."""
        if found is not None and (found.states is None or state.name in found.states):
            element, tpm = found.element, found.tpm
        else:
            element, tpm = state.element, state.tpm
        return element, tpm if tpm is not None else TPM_DEFAULT.get(element)


def check_window(a: datetime, b: datetime) -> float:
    """The length of the window [a, b) in seconds; ValueError unless it has one."""
    if b <= a:
        raise ValueError(f"a window must end after it starts: [{a.isoformat()}, {b.isoformat()})")
    return (b - a).total_seconds()


def overlap_s(start: datetime, end: datetime, a: datetime, b: datetime) -> float:
    """Seconds [start, end) and [a, b) share."""
    return max(0.0, (min(end, b) - max(start, a)).total_seconds())


def label_spans(
    mapping: LossMapping,
    spans: Sequence[StateSpan],
    reclassifications: Mapping[datetime, Reclassification],
) -> Labelled:
    """Classify sorted, non-overlapping spans and gather their stops into events."""
    classifier = Classifier(mapping)
    for before, after in pairwise(spans):
        if after.start < before.end:
            raise ValueError(f"state spans overlap or are unsorted at {after.start.isoformat()}")
    keys = [classifier.key(span.state) for span in spans]
    # Each distinct code once: its time element, and its state if that is a stop.
    states = {key: classifier.keyed_state(key) for key in set(keys)}
    element_of = {key: None if state is None else state.element for key, state in states.items()}
    stopping = {
        key: state
        for key, state in states.items()
        if state is not None and state.element is not TimeElement.PRODUCTION
    }
    elements = [element_of[key] for key in keys]
    minor = [False] * len(spans)
    events: list[StopEvent] = []
    after_run = 0
    for index in [index for index, key in enumerate(keys) if key in stopping]:
        if index < after_run:
            continue  # part of the stop before
        # A stop lasts while the same state code continues without a gap; the reason and
        # product may change inside it.
        key, stop = keys[index], index + 1
        while stop < len(spans) and keys[stop] == key and spans[stop].start == spans[stop - 1].end:
            stop += 1
        first = spans[index]
        event = _event(
            classifier, stopping[key], spans[index:stop], reclassifications.get(first.start)
        )
        events.append(event)
        elements[index:stop] = [event.element] * (stop - index)
        minor[index:stop] = [event.minor] * (stop - index)
        after_run = stop
    return Labelled(events, elements, minor)


def _event(
    classifier: Classifier,
    state: StateMapping,
    run: Sequence[StateSpan],
    reclassified: Reclassification | None,
) -> StopEvent:
    first, last = run[0], run[-1]
    reason: Code | None = None
    if reclassified is not None:
        reason = reclassified.reason
    else:
        for span in run:
            if span.reason is not None:
                reason = span.reason
                break
    found = classifier.reason(reason)
    element, tpm = classifier.stop(state, found)
    duration = (last.end - first.start).total_seconds()
    minor = element is TimeElement.DELAY and (
        tpm is TpmLoss.MINOR_STOP or duration < classifier.mapping.microstop_threshold_s
    )
    # Positional: a report makes thousands, and keywords take twice as long.
    return StopEvent(
        first.start,  # start
        None if last.open else last.end,  # end
        duration,  # duration_s
        first.state,  # state
        state.name,  # state_name
        reason,  # reason
        None if found is None else found.name,  # reason_name
        element,  # element
        TpmLoss.MINOR_STOP if minor else tpm,  # tpm
        minor,  # minor
        reclassified,  # reclassified
    )


def stop_events(
    mapping: LossMapping,
    spans: Sequence[StateSpan],
    reclassifications: Mapping[datetime, Reclassification],
) -> list[StopEvent]:
    """The stop events of sorted, non-overlapping spans, oldest first."""
    return label_spans(mapping, spans, reclassifications).events


@dataclass(frozen=True, slots=True)
class ParetoBar:
    """The events of one reason or one category: their time in the window and its share."""

    label: str
    """The reason's name (else its code, else "no reason"), or the category ("ADET / breakdown")."""
    reason: Code | None
    """By reason: the code (None: no reason); by category: None."""
    element: TimeElement | None
    """By category: the time element; by reason: None."""
    tpm: TpmLoss | None
    seconds: float
    events: int
    share: float
    """Of the time of every bar, 0 to 1."""


def pareto(
    events: Sequence[StopEvent],
    window: tuple[datetime, datetime],
    by: Literal["reason", "category"] = "reason",
) -> list[ParetoBar]:
    """Stop time in the window by reason or by category (element and TPM loss), largest first."""
    a, b = window
    check_window(a, b)
    bars: dict[object, tuple[ParetoBar, float, int]] = {}
    for event in events:
        seconds = overlap_s(event.start, event.until, a, b)
        if seconds == 0:
            continue
        key: object
        if by == "reason":
            key = None if event.reason is None else code_key(event.reason)
            bar = ParetoBar(_reason_label(event), event.reason, None, None, 0.0, 0, 0.0)
        else:
            key = (event.element, event.tpm)
            bar = ParetoBar(_category_label(event), None, event.element, event.tpm, 0.0, 0, 0.0)
        bar, total, count = bars.get(key, (bar, 0.0, 0))
        bars[key] = bar, total + seconds, count + 1
    everything = sum(total for _, total, _ in bars.values())
    ranked = sorted(bars.values(), key=lambda entry: (-entry[1], -entry[2], entry[0].label))
    return [
        replace(bar, seconds=total, events=count, share=total / everything)
        for bar, total, count in ranked
    ]


def _reason_label(event: StopEvent) -> str:
    if event.reason_name is not None:
        return event.reason_name
    return "no reason" if event.reason is None else str(event.reason)


def _category_label(event: StopEvent) -> str:
    element = ISO_22400_ELEMENT[event.element]
    return element if event.tpm is None else f"{element} / {event.tpm.value}"


@dataclass(frozen=True, slots=True)
class StateTime:
    """The time a machine spent in one state within a window."""

    state: str | None
    """The state's name; None: unknown (no state known, or a code the mapping lacks)."""
    element: TimeElement | None
    seconds: float
    percent: float
    """Of the window."""


def time_in_state(
    mapping: LossMapping, spans: Sequence[StateSpan], a: datetime, b: datetime
) -> list[StateTime]:
    """Seconds and percent of [a, b) in each state of the mapping, in its order, then unknown."""
    length = check_window(a, b)
    classifier = Classifier(mapping)
    seconds = {state.name: 0.0 for state in mapping.states}
    for span in spans:
        state = classifier.state(span.state)
        if state is not None:
            seconds[state.name] += overlap_s(span.start, span.end, a, b)
    unknown = length - sum(seconds.values())
    rows = [
        StateTime(
            state.name, state.element, seconds[state.name], seconds[state.name] / length * 100
        )
        for state in mapping.states
    ]
    return [*rows, StateTime(None, None, unknown, unknown / length * 100)]
