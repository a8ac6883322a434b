# Normalizes a real recording into the test fixtures: fixed wall-clock
# fields, a few journeys kept, and the same run as a format-1 file.
import json, sys, zlib
src, out_v2, out_v1 = sys.argv[1:4]
data = open(src, 'rb').read()
nl = data.index(b'\n')
rest = data[nl+1:]
t = rest.rindex(b'\nend ')
body = json.loads(rest[:t])
m = body['meta']
m['started_unix_s'] = 1790000000.0
m['command_line'] = ['netprobe', 'demo', '--trace', '-o', 'demo-v2.rec']
for th in body.get('cpu_threads', []):
    pass
# A handful of journeys per origin device.
keep, per = [], {}
for j in body.get('samples', []):
    o = j['hops'][0]['dev']
    if per.get(o, 0) < 8:
        per[o] = per.get(o, 0) + 1
        keep.append(j)
body['samples'] = keep
def write(path, version, b):
    raw = json.dumps(b, separators=(',', ':')).encode()
    open(path, 'wb').write(b'netprobe-recording %d\n' % version + raw + b'\nend %d %08x\n' % (len(raw), zlib.crc32(raw)))
write(out_v2, 2, body)
v1 = json.loads(json.dumps(body))
del v1['samples']
v1['meta']['command_line'] = ['netprobe', 'demo', '-o', 'demo-v1.rec']
for iv in v1['intervals']:
    for p in iv['pairs']:
        p.pop('hist', None)
write(out_v1, 1, v1)
print(len(keep), 'journeys kept of', len(json.loads(rest[:t]).get('samples', [])), per)
