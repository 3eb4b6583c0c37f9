"""The referrer's network drawn for the review page: where each dot and line goes in the SVG
(reward.html draws them)."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from tracker.finance.evidence import Graph, Node

SEED = 7
LABELS = 20  # above this many nodes only the referrer is named (the rest on hover)
WIDTH, HEIGHT, PAD_X, PAD_Y = 520, 360, 60, 24
NODE_TYPES = {"referrer": "referrer", "customer": "customer", "ip": "IP address",
              "device": "device"}


@dataclass(frozen=True, slots=True)
class Line:
    kind: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True, slots=True)
class Dot:
    node: Node
    x: float
    y: float
    me: bool  # the reward's referrer
    labelled: bool

    @property
    def kind(self) -> str:
        """What the dot is, in words (for its tooltip)."""
        return NODE_TYPES.get(self.node.type, self.node.type)


@dataclass(frozen=True, slots=True)
class Drawing:
    width: int
    height: int
    lines: tuple[Line, ...]
    dots: tuple[Dot, ...]
    crowded: bool  # too many nodes to name them all: names on hover


def layout(graph: Graph, referrer: str) -> Drawing:
    """The graph laid out by a seeded spring layout, scaled into the SVG's box."""
    g = nx.Graph()
    g.add_nodes_from(n.id for n in graph.nodes)
    g.add_edges_from((e.source, e.target) for e in graph.edges)
    pos = {n: (float(x), float(y)) for n, (x, y) in nx.spring_layout(g, seed=SEED).items()}
    xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]

    def at(node: str) -> tuple[float, float]:
        x, y = pos[node]
        sx = (x - min(xs)) / ((max(xs) - min(xs)) or 1)
        sy = (y - min(ys)) / ((max(ys) - min(ys)) or 1)
        return PAD_X + sx * (WIDTH - 2 * PAD_X), PAD_Y + sy * (HEIGHT - 2 * PAD_Y - 16)

    crowded = len(graph.nodes) > LABELS
    lines = tuple(Line(e.kind, *at(e.source), *at(e.target)) for e in graph.edges)
    dots = []
    for n in graph.nodes:
        me = n.type == "referrer" and n.label == referrer
        dots.append(Dot(n, *at(n.id), me=me, labelled=me or not crowded))
    return Drawing(WIDTH, HEIGHT, lines, tuple(dots), crowded)
