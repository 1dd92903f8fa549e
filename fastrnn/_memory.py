"""Memory: how much this process can still have, and refusing, before anything is
allocated, what would not fit.

The rule: a request is refused when the bytes of its largest arrays, estimated from the
sizes alone (so below all it takes), exceed the memory available to this process, the
least of
- MemAvailable of /proc/meminfo: what the system can give without swapping (elsewhere
  the free pages, SC_AVPHYS_PAGES);
- the room left under the memory limit of the process's cgroup (memory.max, or cgroup
  v1's memory.limit_in_bytes), which containers and batch schedulers set;
- the room left under its address-space limit (RLIMIT_AS, `ulimit -v`).
Where none of these can be read, nothing is refused. A request that fits may still fail
later, as anything may; one that does not fit would have ended in a MemoryError halfway,
or in the kernel's out-of-memory killer, after minutes of allocating.
"""

import os

try:
    import resource
except ImportError:   # not on Windows
    resource = None

# Requests below this are let through unchecked: reading the limits (80 us) would cost
# a small layer more than building it.
UNCHECKED_BYTES = 64 * 2**20


def refuse_unless_fits(needs, doing, advice):
    """MemoryError naming the numbers when `needs` ({what: bytes}) add up to more than
    the memory available here; `doing` says what needs it, `advice` what to change."""
    total = sum(needs.values())
    if total < UNCHECKED_BYTES:
        return
    available = available_bytes()
    if available is None or total <= available:
        return
    if len(needs) == 1:
        detail = f" for its {next(iter(needs))}"
    else:
        detail = " (" + ", ".join(f"{what} {format_bytes(size)}"
                                  for what, size in needs.items()) + ")"
    raise MemoryError(f"{doing} needs at least {format_bytes(total)} of memory{detail}, more "
                      f"than the {format_bytes(available)} available to this process; {advice}")


def format_bytes(size):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}" if unit != "B" else f"{size} B"
        size /= 1024
    return f"{size:.1f} TiB"


def available_bytes():
    """The memory this process can still have (see the module docstring), or None."""
    known = [room for room in (_system_available(), _cgroup_room(), _address_space_room())
             if room is not None]
    return min(known) if known else None


def _system_available():
    value = _field("/proc/meminfo", "MemAvailable:")
    if value is not None:
        return value
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_room():
    """The room under the memory limit of this process's own cgroup, or None."""
    try:
        with open("/proc/self/cgroup") as file:
            groups = [line.rstrip("\n").split(":", 2) for line in file]
    except OSError:
        return None
    for hierarchy, controllers, path in groups:
        if hierarchy == "0" and not controllers:
            files = ("/sys/fs/cgroup", "memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            files = ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        root, limit_name, usage_name = files
        limit, usage = (_number(os.path.join(root + path, name))
                        for name in (limit_name, usage_name))
        if limit is not None and usage is not None:   # cgroup v2 writes "max" for none
            return max(limit - usage, 0)
    return None


def _address_space_room():
    if resource is None:
        return None
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit == resource.RLIM_INFINITY:
        return None
    used = _field("/proc/self/status", "VmSize:")
    return max(limit - (used or 0), 0)


def _field(path, name):
    """The `name` line of a /proc file in kB, as bytes; None where there is none."""
    try:
        with open(path) as file:
            for line in file:
                if line.startswith(name):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _number(path):
    try:
        with open(path) as file:
            return int(file.read())
    except (OSError, ValueError):
        return None
