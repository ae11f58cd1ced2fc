"""Reference numbers for tests/metrics.rs, computed with networkx 3.6.1 and numpy
(independent of the Rust code): degree and clustering histograms, normalised-Laplacian
spectra, and MMD^2 with GraphRNN/GRAN/GDSS's kernel formulas, where the earth mover's
distance is solved as a transport problem by the north-west corner rule (optimal for 1-D
costs |i - j|), not by cumulative sums as in the crate.

Run: python3 data/reference_metrics.py  (writes data/reference_metrics.json)
"""
import json, math, os
import networkx as nx
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
real = json.load(open(os.path.join(HERE, "real_networkx.json")))
synth = json.load(open(os.path.join(HERE, "synthetic_benchmarks.json")))

def graph(rec):
    g = nx.Graph(); g.add_nodes_from(range(rec["n"])); g.add_edges_from(map(tuple, rec["edges"])); return g

def emd(x, y, scaling):
    # north-west corner transport between equal-mass 1-D histograms
    x = list(x); y = list(y); i = j = 0; cost = 0.0
    while i < len(x) and j < len(y):
        f = min(x[i], y[j]); cost += f * abs(i - j) / scaling
        x[i] -= f; y[j] -= f
        if x[i] <= 1e-15: i += 1
        if y[j] <= 1e-15: j += 1
    return cost

def pad(x, y):
    L = max(len(x), len(y)); return np.pad(np.asarray(x, float), (0, L - len(x))), np.pad(np.asarray(y, float), (0, L - len(y)))

def k_emd(x, y, sigma, scaling):
    x, y = pad(x, y); d = emd(x, y, scaling); return math.exp(-d * d / (2 * sigma * sigma))
def k_tv(x, y, sigma):
    x, y = pad(x, y); d = np.abs(x - y).sum() / 2.0; return math.exp(-d * d / (2 * sigma * sigma))

def mmd(a, b, k):
    a = [np.asarray(v, float) / np.sum(v) for v in a]; b = [np.asarray(v, float) / np.sum(v) for v in b]
    disc = lambda p, q: sum(k(u, v) for u in p for v in q) / (len(p) * len(q))
    return disc(a, a) + disc(b, b) - 2 * disc(a, b)

def deg(g): return nx.degree_histogram(g)
def clus(g): return np.histogram(list(nx.clustering(g).values()), bins=100, range=(0.0, 1.0))[0].tolist()
def spec(g):
    ev = np.linalg.eigvalsh(nx.normalized_laplacian_matrix(g).toarray())
    h = np.histogram(ev, bins=200, range=(-1e-5, 2))[0]; return (h / h.sum()).tolist(), ev.tolist()

out = {}
for name in ["karate_club", "florentine_families", "les_miserables"]:
    g = graph(real[name])
    sh, ev = spec(g)
    out[name] = {"degree_histogram": deg(g), "clustering": [nx.clustering(g)[u] for u in range(g.number_of_nodes())],
                 "clustering_histogram": clus(g), "average_clustering": nx.average_clustering(g),
                 "eigenvalues": ev, "spectral_histogram": sh}
cs = [graph(r) for r in synth["community_small"]["graphs"]]
a, b = cs[:10], cs[10:25]
out["community_small_mmd"] = {
    "reference": "graphs 0..10 vs 10..25 of community_small",
    "gdss": {"degree": mmd([deg(g) for g in a], [deg(g) for g in b], lambda x, y: k_emd(x, y, 1.0, 1.0)),
             "clustering": mmd([clus(g) for g in a], [clus(g) for g in b], lambda x, y: k_emd(x, y, 0.1, 100.0)),
             "spectral": mmd([spec(g)[0] for g in a], [spec(g)[0] for g in b], lambda x, y: k_emd(x, y, 1.0, 1.0))},
    "gran": {"degree": mmd([deg(g) for g in a], [deg(g) for g in b], lambda x, y: k_tv(x, y, 1.0)),
             "clustering": mmd([clus(g) for g in a], [clus(g) for g in b], lambda x, y: k_tv(x, y, 0.1)),
             "spectral": mmd([spec(g)[0] for g in a], [spec(g)[0] for g in b], lambda x, y: k_tv(x, y, 1.0))},
}
json.dump(out, open(os.path.join(HERE, "reference_metrics.json"), "w"), indent=None)
print(json.dumps(out["community_small_mmd"], indent=1))
