"""Makes the recording fixtures from real runs of the built netprobe:

    netprobe demo --trace -o demo.rec
    netprobe demo --topology bridge -o bridge.rec
    NETPROBE_GUEST_RECORDING=$PWD/guest-src.rec cargo xtask test --no-lab --no-cross -- --test real_guest
    netprobe demo --drop-stacks -o stacks-src.rec
    python3 make_fixtures.py demo.rec bridge.rec [guest-src.rec [stacks-src.rec]]   # '-' for a source: keep its fixtures

guest.rec is a real QEMU guest (tests/tests/real_guest.rs: TCG, virtio-net
on a macvtap, no debug-threads) pinging, streaming and running UDP
request-response while netprobe recorded. drop-stacks.rec is a demo run
with --drop-stacks: its drops by kernel stack (Linux 6.18, this VM).

Wall-clock fields are fixed (start time, command line), a few journeys per
origin device are kept, and demo-v1.rec is the same run in format 1 (what
netprobe wrote before format 2: no interval histograms, no journeys).
"""
import json
import sys
import zlib


def read(path):
    data = open(path, 'rb').read()
    rest = data[data.index(b'\n') + 1:]
    return json.loads(rest[:rest.rindex(b'\nend ')])


def write(path, version, body):
    raw = json.dumps(body, separators=(',', ':')).encode()
    trailer = b'\nend %d %08x\n' % (len(raw), zlib.crc32(raw))
    open(path, 'wb').write(b'netprobe-recording %d\n' % version + raw + trailer)


def fix(body, start, command):
    body['meta']['started_unix_s'] = start
    body['meta']['command_line'] = command
    keep, per = [], {}
    for j in body.get('samples', []):
        origin = j['hops'][0]['dev']
        if per.get(origin, 0) < 8:
            per[origin] = per.get(origin, 0) + 1
            keep.append(j)
    body['samples'] = keep
    return body


def guest_fixture(src):
    guest = read(src)
    command = guest['meta']['command_line']
    command[command.index('-o') + 1] = 'guest.rec'
    write('guest.rec', 2, fix(guest, 1790000200.0, command))


def demo_fixtures(demo_src, bridge_src):
    demo = fix(read(demo_src), 1790000000.0, ['netprobe', 'demo', '--trace', '-o', 'demo-v2.rec'])
    write('demo-v2.rec', 2, demo)
    v1 = json.loads(json.dumps(demo))
    del v1['samples']
    v1['meta']['command_line'] = ['netprobe', 'demo', '-o', 'demo-v1.rec']
    for iv in v1['intervals']:
        for p in iv['pairs']:
            p.pop('hist', None)
    write('demo-v1.rec', 1, v1)
    write('bridge.rec', 2, fix(read(bridge_src), 1790000100.0, ['netprobe', 'demo', '--topology', 'bridge', '-o', 'bridge.rec']))


# A source given as '-' leaves its fixtures as they are.
if sys.argv[1] != '-':
    demo_fixtures(sys.argv[1], sys.argv[2])
if len(sys.argv) > 3 and sys.argv[3] != '-':
    guest_fixture(sys.argv[3])
if len(sys.argv) > 4:
    write('drop-stacks.rec', 2, fix(read(sys.argv[4]), 1790000300.0, ['netprobe', 'demo', '--drop-stacks', '-o', 'drop-stacks.rec']))
