"""Where the handshake's instructions go: the listener server against the floor, item by item.

    python bench/e2e/handshake_instructions.py --n 2000 --servers listener,handshake-floor --keep /tmp/hs2000
    python bench/e2e/handshake_instructions.py --n 200 --servers listener,handshake-floor --keep /tmp/hs200
    python bench/e2e/handshake_split.py /tmp/hs2000 /tmp/hs200

Reads the two runs' callgrind dumps of the opening window (``--keep``) and
prints a markdown table, per accepted connection: each item's inclusive
instructions in the big run minus the small run, divided by the difference in
connections opened (what one more connection costs; one-time costs such as the
timer wheel's creation on the first connection cancel out). Items are C
functions' inclusive costs (callgrind's call edges); Python frames are not
visible to callgrind, so the Python code of a step is the step's C entry point
minus the C items inside it. Functions are matched by name (a Cython helper
of the same name in two extensions is one function here: only module-specific
names are used). See docs/design/handshake.md#where-the-instructions-go.
"""
from __future__ import annotations

import collections
import re
import sys
from pathlib import Path


UV = "__pyx_f_6uvloop_4loop_"
HT = "__pyx_f_9httptools_6parser_6parser_"
# (Cython numbers a class's methods in order: matched by pattern)
# read, or read_accept (read, accept and pack_lines in one call since #16's third round)
READ = re.compile(r"__pyx_pw_10fastws_ext_7upgrade_13UpgradeReader_\d+read(_accept)?$")
ACCEPT_101_AT = "__pyx_f_10fastws_ext_7upgrade__accept_101_at"  # the 101 with its SHA-1 + base64, in C
ACCEPT = re.compile(r"__pyx_pw_10fastws_ext_7upgrade_13UpgradeReader_\d+accept$")
ARM = "__pyx_pw_10fastws_ext_5wheel_10TimerWheel_7arm"  # Python-level arm (before issue #16)
ARM_C = "__pyx_f_10fastws_ext_5wheel_10TimerWheel_arm"  # its C body, also called by fastws_ext.wheel.LoopDriver
CORE_NEW, ENTRY_NEW = "__pyx_tp_new_10fastws_ext_4core_ConnectionCore", "__pyx_tp_new_10fastws_ext_5wheel_TimerEntry"

# (group, item): the rows, in the order of the table
ROWS = [
    ("connection/transport", "accept(2) wrapper + TCPTransport (uvloop)"),
    ("connection/transport", "Loop._track_transport: WeakValueDictionary.__setitem__ (uvloop)"),
    ("connection/transport", "cyclic GC: gen-0 collections (fire in _track_transport)"),
    ("connection/transport", "protocol object: factory call + __init__ (Python)"),
    ("connection/transport", "connection_made without the wheel (Python)"),
    ("timers", "timer wheel: TimerEntry + TimerWheel.arm (C)"),
    ("parser", "llhttp state machine (llhttp_execute without callbacks)"),
    ("parser", "httptools callbacks: on_url/on_header (none since issue #16), on_headers_complete"),
    ("parser", "httptools feed_data rest: raising HttpParserUpgrade (0: llhttp called directly)"),
    ("parser", "UpgradeReader.read: catching HttpParserUpgrade"),
    ("parser", "UpgradeReader.read rest: the answer (since #16's third round with the 101's bytes and pack_lines)"),
    ("header validation", "floor: bytes.lower + find; fastws: scan (target and field lines found in the head)"),
    ("accept key", "SHA-1 + base64"),
    ("write the 101", "transport.write"),
    ("upgrade glue", "data_received rest (Python frames)"),
    ("rest", "event loop: epoll, read(2) path, call_soon handles"),
]


def parse(path):
    """(self cost per function, inclusive cost per (caller, callee) edge) of a callgrind dump."""
    names, selfc, edges = {}, collections.Counter(), collections.Counter()
    fn = cfn = None
    in_call = False

    def name(tok):
        m = re.match(r"\((\d+)\)(?: (.*))?", tok)
        if not m:
            return tok
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names[m.group(1)]

    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                fn = name(line[3:].rstrip("\n"))
            elif line.startswith("cfn="):
                cfn = name(line[4:].rstrip("\n"))
            elif line.startswith("calls="):
                in_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if in_call:
                    edges[(fn, cfn)] += cost
                    in_call = False
                else:
                    selfc[fn] += cost
    return selfc, edges


def items(path: str, floor: bool) -> tuple[int, dict[str, int]]:
    selfc, edges = parse(path)
    out = collections.defaultdict(collections.Counter)
    for (a, b), c in edges.items():
        if a != b:  # a clinic wrapper and its function share a name
            out[a][b] += c

    def incl(f):
        if isinstance(f, re.Pattern):
            return sum(incl(g) for g in list(selfc) if f.match(g))
        return selfc[f] + sum(out[f].values())

    def edges_from(f, callees):
        if isinstance(f, re.Pattern):
            return sum(edges_from(g, callees) for g in list(selfc) if f.match(g))
        return sum(out[f][h] for h in callees)

    r = {}
    factory = out[UV + "14UVStreamServer__on_listen"][UV + "run_in_context"]
    track, gc = incl(UV + "4Loop__track_transport"), incl("gc_collect_main")
    entry = out[CORE_NEW][ENTRY_NEW]
    r[ROWS[0][1]] = incl(UV + "14UVStreamServer__on_listen") - factory - track
    r[ROWS[1][1]] = track - gc
    r[ROWS[2][1]] = gc
    r[ROWS[3][1]] = factory - entry
    # A connection arms its timer twice (the handshake timeout in
    # connection_made, the keepalive once open, in data_received): since issue
    # #16 both through LoopDriver into TimerWheel.arm's C body, half each.
    arm = incl(ARM_C) if incl(ARM_C) else incl(ARM)
    arm_cm = arm / 2 if incl(ARM_C) else arm
    r[ROWS[4][1]] = incl(UV + "15UVBaseTransport__call_connection_made") - arm_cm
    r[ROWS[5][1]] = arm + entry
    data = incl(UV + "run_in_context1")  # data_received and its dispatch: the window's only user
    sha = (incl("_hashlib_openssl_sha1") + incl("EVP_digest") if floor
           else incl("_sha1_sha1") + incl("SHA1Type_digest"))
    # (since issue #16 fastws hashes in C: UpgradeReader.accept, the 101 with it)
    # (and since its third round, under read_accept: counted here, not in read's rest)
    key_in_read = 0 if floor else edges_from(READ, (ACCEPT_101_AT,))
    key = sha + incl("binascii_b2a_base64") + incl(ACCEPT) + key_in_read
    write = incl(UV + "8UVStream_write")
    r[ROWS[12][1]], r[ROWS[13][1]] = key, write
    if floor:
        scan = incl("bytes_find") + incl("bytes_lower")
        r[ROWS[11][1]] = scan
        r[ROWS[14][1]] = data - key - write - scan
    else:
        read, feed = incl(READ), incl("__pyx_pw_9httptools_6parser_6parser_10HttpParser_13feed_data")
        llhttp = incl("llhttp__internal_execute")
        cbs = sum(incl(HT + cb) for cb in ("cb_on_header_field", "cb_on_header_value", "cb_on_url",
                                            "cb_on_headers_complete", "cb_on_message_begin"))
        catch = edges_from(READ, ("__Pyx__ExceptionReset.isra.0", "__Pyx_AddTraceback.constprop.0",
                                  "__Pyx__GetException.constprop.0"))
        catch += incl("__pyx_f_10fastws_ext_7upgrade__upgrade_at")  # since issue #16: C API, no traceback
        # scan_upgrade before issue #16 (a Python-level call), the C _scan since
        scan = incl("__pyx_pw_10fastws_ext_7upgrade_1scan_upgrade") + incl("__pyx_f_10fastws_ext_7upgrade__scan")
        r[ROWS[6][1]] = llhttp - cbs
        r[ROWS[7][1]] = cbs
        # feed_data 0: llhttp's C API called directly from read() (since the
        # second round of issue #16), not under feed_data
        r[ROWS[8][1]] = feed - llhttp if feed else 0
        r[ROWS[9][1]] = catch
        r[ROWS[10][1]] = read - (feed if feed else llhttp) - catch - scan - key_in_read
        r[ROWS[11][1]] = scan
        r[ROWS[14][1]] = data - read - (key - key_in_read) - write - (arm - arm_cm)
    total = sum(selfc.values())
    r[ROWS[15][1]] = total - sum(r.values())
    return total, r


def per_connection(big: Path, small: Path, name: str) -> dict[str, float]:
    n_big, n_small = (int((d / f"{name}.opened").read_text()) for d in (big, small))
    tb, rb = items(str(big / f"{name}.cg.out"), name == "handshake-floor")
    ts, rs = items(str(small / f"{name}.cg.out"), name == "handshake-floor")
    per = {k: (rb.get(k, 0) - rs.get(k, 0)) / (n_big - n_small) for k in rb}
    per["total"] = (tb - ts) / (n_big - n_small)
    return per


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    big, small = Path(sys.argv[1]), Path(sys.argv[2])
    floor, listener = (per_connection(big, small, name) for name in ("handshake-floor", "listener"))
    print("| group | item | floor | listener | difference |")
    print("|---|---|---:|---:|---:|")
    groups = collections.Counter()
    for group, item in ROWS + [("", "total")]:
        f, li = floor.get(item, 0.0), listener.get(item, 0.0)
        groups[group] += li - f
        print(f"| {group} | {item} | {f:,.0f} | {li:,.0f} | {li - f:+,.0f} |")
    print()
    print("| group | listener minus floor |")
    print("|---|---:|")
    for group, diff in sorted(groups.items(), key=lambda g: -g[1]):
        if group:
            print(f"| {group} | {diff:+,.0f} |")


if __name__ == "__main__":
    main()
