"""The Jinja sandbox templates render in, with limits of time, size and memory.

A spec's template is user input: rendering it must end in seconds with bounded memory, whatever it
says (``{{ 'x' * 10**10 }}``, ``{% for i in range(10**9) %}``, nested loops, ``"%999999999s" % x``).

- ``range`` yields at most ``MAX_RANGE`` items, and every 1,024 items checks the time;
- ``*``, ``**``, ``%`` and ``+`` are intercepted: a repetition or concatenation whose result would be
  longer than ``MAX_OUTPUT``, a power of more than ``MAX_POWER_BITS`` bits and a ``%`` format with a
  width or precision above ``MAX_OUTPUT`` are refused before they are computed;
- calls (functions, methods, macros) and filters check the time, refuse string arguments longer
  than ``MAX_OUTPUT`` and, for the filters and ``str`` methods that pad or format (``center``,
  ``ljust``, ``format``, ...), numbers above ``MAX_OUTPUT``;
- the output is collected piece by piece and may not exceed ``MAX_OUTPUT``;
- on the main thread a timer interrupts a render that runs longer than ``RENDER_SECONDS`` (also a
  loop over a list, which passes through none of the checks above), and the address space may grow
  by at most ``RENDER_MEMORY`` while it runs (``MemoryError`` instead of swapping the machine).

Every limit raises ``RenderLimit`` (a ``SecurityError``) with a sentence naming the limit;
``templates.py`` turns it into a ``SpecError`` naming the file and the line.
"""

from __future__ import annotations

import functools
import re
import resource
import signal
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from jinja2.sandbox import SandboxedEnvironment, SecurityError

RENDER_SECONDS = 5.0
MAX_OUTPUT = 16 * 1024 * 1024  # characters of output, of one string, of one padded width
MAX_RANGE = 100_000
MAX_POWER_BITS = 4096
RENDER_MEMORY = 256 * 1024 * 1024  # bytes of address space a render may add
CHECK_EVERY = 1024

PADDING_FILTERS = frozenset({"center", "indent"})
PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "format", "format_map"})
FORMAT_METHODS = frozenset({"format", "format_map"})
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\d*)(?:\.(\d*))?")
_BRACE_SPEC = re.compile(r"\{[^{}]*:([^{}]*)\}")
_DIGITS = re.compile(r"\d+")


class RenderLimit(SecurityError):
    """A template exceeded a limit of time, size or memory; ``line``: the template line, if known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def template_line(exc: BaseException) -> int | None:
    """The template line an error was raised on (Jinja rewrites tracebacks to template frames)."""
    if getattr(exc, "line", None):
        return exc.line
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _too_long(value: Any) -> bool:
    return isinstance(value, (str, bytes, list, tuple)) and len(value) > MAX_OUTPUT


def _check_widths(fmt: Any) -> None:
    """Refuse a format string with a width or precision above MAX_OUTPUT (``%999999999s``,
    ``{:>999999999}``)."""
    if not isinstance(fmt, str):
        return
    widths = [w for m in _PERCENT_SPEC.finditer(fmt) for w in m.groups() if w]
    widths += [w for spec in _BRACE_SPEC.findall(fmt) for w in _DIGITS.findall(spec)]
    if any(int(w) > MAX_OUTPUT for w in widths):
        raise RenderLimit(f"a format width above {MAX_OUTPUT} characters")


def _check_numbers(values) -> None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_OUTPUT:
            raise RenderLimit(f"a width of {value} (at most {MAX_OUTPUT})")


def _check_format(fmt: Any, values) -> None:
    """A format string's own widths, and its arguments when it takes widths from them (``%*s``,
    ``{:{}}``)."""
    _check_widths(fmt)
    if isinstance(fmt, str) and ("*" in fmt or ":{" in fmt):
        _check_numbers(values)


class TimedRange:
    """``range()`` in templates: at most MAX_RANGE items, the time checked while iterating."""

    def __init__(self, env: "LimitedEnvironment", numbers: range) -> None:
        self.env, self.numbers = env, numbers

    def __len__(self) -> int:
        return len(self.numbers)

    def __getitem__(self, index):
        return self.numbers[index]

    def __contains__(self, item) -> bool:
        return item in self.numbers

    def __iter__(self) -> Iterator[int]:
        for n, item in enumerate(self.numbers):
            if n % CHECK_EVERY == 0:
                self.env.check_time()
            yield item

    def __repr__(self) -> str:
        return repr(self.numbers)


class LimitedEnvironment(SandboxedEnvironment):
    """A ``SandboxedEnvironment`` whose renders are bounded (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *args: Any, seconds: float = RENDER_SECONDS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seconds = seconds
        self.deadline = float("inf")
        self.globals["range"] = self._range
        self.filters = {name: self._limited_filter(name, f) for name, f in self.filters.items()}

    # -- time ----------------------------------------------------------------------------------
    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderLimit(f"rendering took longer than {self.seconds:g} s")

    def _range(self, *args: int) -> TimedRange:
        numbers = range(*args)
        if len(numbers) > MAX_RANGE:
            raise RenderLimit(f"range() of {len(numbers)} items (at most {MAX_RANGE})")
        return TimedRange(self, numbers)

    # -- operators, calls, filters -------------------------------------------------------------
    def call_binop(self, context, operator_: str, left: Any, right: Any) -> Any:
        self.check_time()
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int) \
                        and len(seq) * max(times, 0) > MAX_OUTPUT:
                    raise RenderLimit(f"a repetition of {len(seq)} x {times} items (at most {MAX_OUTPUT})")
        elif operator_ == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 \
                    and max(abs(left), 2).bit_length() * right > MAX_POWER_BITS:
                raise RenderLimit(f"a power of more than {MAX_POWER_BITS} bits")
        elif operator_ == "%" and isinstance(left, str):
            _check_format(left, right if isinstance(right, tuple) else (right,))
        elif operator_ == "+" and isinstance(left, (str, bytes, list, tuple)) \
                and isinstance(right, (str, bytes, list, tuple)) and len(left) + len(right) > MAX_OUTPUT:
            raise RenderLimit(f"a result longer than {MAX_OUTPUT} items")
        return super().call_binop(context, operator_, left, right)

    def call(__self, __context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        __self.check_time()
        values = (*args, *kwargs.values())
        if any(_too_long(v) for v in values):
            raise RenderLimit(f"an argument longer than {MAX_OUTPUT} items")
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner, method = getattr(target, "__self__", None), getattr(target, "__name__", "")
        if isinstance(owner, str) and method in FORMAT_METHODS:
            _check_format(owner, values)
        elif isinstance(owner, str) and method in PADDING_METHODS:
            _check_numbers(values)
        result = super().call(__context, __obj, *args, **kwargs)
        if _too_long(result):
            raise RenderLimit(f"a result longer than {MAX_OUTPUT} items")
        return result

    def _limited_filter(self, name: str, func: Callable) -> Callable:
        padding = name in PADDING_FILTERS

        @functools.wraps(func)  # keeps jinja's pass_context / pass_environment marks
        def limited(*args: Any, **kwargs: Any) -> Any:
            self.check_time()
            values = (*args, *kwargs.values())
            if any(_too_long(v) for v in values):
                raise RenderLimit(f"the {name} filter got a value longer than {MAX_OUTPUT} items")
            if name == "format":
                _check_format(next((v for v in args if isinstance(v, str)), None), values)
            elif padding:
                _check_numbers(values)
            result = func(*args, **kwargs)
            if _too_long(result):
                raise RenderLimit(f"the {name} filter made a value longer than {MAX_OUTPUT} items")
            return result

        return limited

    # -- rendering -----------------------------------------------------------------------------
    def render_limited(self, source: str, values: dict[str, Any]) -> str:
        """Compile and render ``source`` under every limit; raises ``RenderLimit`` past one."""
        template = self.from_string(source)
        self.deadline = time.monotonic() + self.seconds
        parts: list[str] = []
        size = 0
        with _alarm(self.seconds), _memory_cap(RENDER_MEMORY):
            try:
                for piece in template.generate(values):
                    size += len(piece)
                    if size > MAX_OUTPUT:
                        raise RenderLimit(f"the rendered text is longer than {MAX_OUTPUT} characters")
                    parts.append(piece)
            except MemoryError as exc:
                parts.clear()
                raise RenderLimit(f"rendering needs more than {RENDER_MEMORY // 2**20} MiB of memory",
                                  template_line(exc)) from None
            except RecursionError as exc:
                raise RenderLimit("rendering recursed too deeply", template_line(exc)) from None
        return "".join(parts)


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """On the main thread, with no timer of the caller running: raise ``RenderLimit`` after
    ``seconds`` wherever the render is (between two Python bytecodes)."""
    if not _on_main_thread() or signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        yield
        return

    def expired(*_: Any) -> None:
        raise RenderLimit(f"rendering took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds + 0.5)  # the checks above usually fire first
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _address_space() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


@contextmanager
def _memory_cap(extra: int) -> Iterator[None]:
    """On the main thread: the address space may grow by ``extra`` bytes while the block runs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used = _address_space()
    limit = used + extra
    capped = any(bound != resource.RLIM_INFINITY and limit > bound for bound in (soft, hard))
    if not _on_main_thread() or threading.active_count() > 1 or not used or capped:
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


