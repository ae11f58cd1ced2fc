//! Graph construction errors and the three file formats.

mod common;

use diffusion_graph::io::{self, GraphRecord};
use diffusion_graph::{Graph, GraphError};

fn karate() -> Graph {
    io::read_named_graph(common::data("real_networkx.json"), "karate_club").unwrap()
}

#[test]
fn construction_rejects_bad_edges_by_name() {
    assert!(matches!(
        Graph::from_edges(3, &[(0, 1), (1, 1)]),
        Err(GraphError::SelfLoop { node: 1 })
    ));
    assert!(matches!(
        Graph::from_edges(3, &[(0, 1), (2, 0), (1, 0)]),
        Err(GraphError::DuplicateEdge { u: 0, v: 1 })
    ));
    assert!(matches!(
        Graph::from_edges(3, &[(0, 3)]),
        Err(GraphError::NodeOutOfRange { index: 3, n: 3 })
    ));
    assert!(matches!(
        Graph::empty(2).with_node_types(vec![0]),
        Err(GraphError::Length {
            expected: 2,
            got: 1,
            ..
        })
    ));
    assert!(matches!(
        Graph::empty(0).require_nodes("x"),
        Err(GraphError::EmptyGraph { .. })
    ));
    let msg = Graph::from_edges(2, &[(1, 1)]).unwrap_err().to_string();
    assert!(msg.contains("self-loop"), "{msg}");
}

#[test]
fn edges_are_canonical_and_queries_agree() {
    let g = Graph::from_edges(4, &[(3, 2), (1, 0), (2, 0)]).unwrap();
    assert_eq!(g.edges().collect::<Vec<_>>(), vec![(0, 1), (0, 2), (2, 3)]);
    assert_eq!((g.n(), g.m()), (4, 3));
    assert!(g.has_edge(2, 3) && g.has_edge(3, 2) && !g.has_edge(1, 3) && !g.has_edge(9, 0));
    assert_eq!(g.neighbors(0), &[1, 2]);
    assert!(g.is_connected());
    assert_eq!(Graph::from_edges(4, &[(0, 1)]).unwrap().components(), 3);
}

#[test]
fn shared_json_files_load() {
    let atlas = io::read_graph_list(common::data("graph_atlas.json")).unwrap();
    assert_eq!(atlas.len(), 1253);
    assert_eq!(atlas.last().unwrap().n(), 7);
    let k = karate();
    assert_eq!((k.n(), k.m()), (34, 78));
    let cs = io::read_dataset(common::data("synthetic_benchmarks.json"), "community_small").unwrap();
    assert_eq!(cs.len(), 100);
    let types = cs[0].node_types().expect("block labels become node types");
    assert_eq!(types.len(), cs[0].n());
    for name in ["sbm", "planar"] {
        assert_eq!(
            io::read_dataset(common::data("synthetic_benchmarks.json"), name)
                .unwrap()
                .len(),
            200
        );
    }
    assert!(matches!(
        io::read_dataset(common::data("synthetic_benchmarks.json"), "ego_small"),
        Err(GraphError::Unknown { .. })
    ));
}

#[test]
fn json_round_trip_and_malformed_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.json");
    let graphs = vec![
        karate(),
        Graph::from_typed_edges(3, &[(0, 2)], vec![1, 0, 1]).unwrap(),
    ];
    io::write_graph_list(&path, &graphs).unwrap();
    assert_eq!(io::read_graph_list(&path).unwrap(), graphs);

    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    assert!(matches!(
        io::read_graph_list(&path),
        Err(GraphError::Malformed { .. })
    ));
    std::fs::write(&path, r#"{"graphs":[{"n":2,"edges":[[0,0]]}]}"#).unwrap();
    assert!(matches!(
        io::read_graph_list(&path),
        Err(GraphError::SelfLoop { node: 0 })
    ));
    std::fs::write(&path, r#"{"graphs":[{"n":2,"edges":[[0,5]]}]}"#).unwrap();
    assert!(matches!(
        io::read_graph_list(&path),
        Err(GraphError::NodeOutOfRange { index: 5, .. })
    ));
    std::fs::write(&path, r#"{"other":[]}"#).unwrap();
    assert!(matches!(
        io::read_graph_list(&path),
        Err(GraphError::Malformed { .. })
    ));
    assert!(matches!(
        io::read_graph_list(dir.path().join("none.json")),
        Err(GraphError::Io { .. })
    ));
    assert_eq!(GraphRecord::of(&graphs[1]).to_graph().unwrap(), graphs[1]);
}

#[test]
fn edge_list_round_trip_keeps_isolated_nodes() {
    let g = Graph::from_edges(6, &[(0, 1), (4, 2)]).unwrap();
    let text = io::to_edgelist(&g);
    assert_eq!(io::parse_edgelist(&text, None).unwrap(), g);
    // networkx's write_edgelist format: data dicts after the pair, no header.
    let nx = "0 1 {}\n1 2 {'weight': 3}\n# comment\n";
    assert_eq!(
        io::parse_edgelist(nx, None).unwrap(),
        Graph::from_edges(3, &[(0, 1), (1, 2)]).unwrap()
    );
    assert!(matches!(
        io::parse_edgelist("0 x\n", None),
        Err(GraphError::Malformed { .. })
    ));
    assert!(matches!(
        io::parse_edgelist("0\n", None),
        Err(GraphError::Malformed { .. })
    ));
    assert!(matches!(
        io::parse_edgelist("0 1\n1 0\n", None),
        Err(GraphError::DuplicateEdge { .. })
    ));
    assert!(matches!(
        io::parse_edgelist("0 3\n", Some(3)),
        Err(GraphError::NodeOutOfRange { .. })
    ));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.edges");
    io::write_edgelist(&p, &g).unwrap();
    assert_eq!(io::read_edgelist(&p, None).unwrap(), g);
}

#[test]
fn graphml_round_trip_with_types() {
    let typed = Graph::from_typed_edges(4, &[(0, 1), (1, 2)], vec![3, 0, 1, 2]).unwrap();
    let graphs = vec![karate(), typed.clone(), Graph::empty(1)];
    let back = io::parse_graphml(&io::to_graphml(&graphs)).unwrap();
    // Types are declared once per file: graphs without them read back with none.
    assert_eq!(back[1], typed);
    assert_eq!(
        back[0].edges().collect::<Vec<_>>(),
        graphs[0].edges().collect::<Vec<_>>()
    );
    assert_eq!(back[2].n(), 1);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.graphml");
    io::write_graphml(&p, std::slice::from_ref(&typed)).unwrap();
    assert_eq!(io::read_graphml(&p).unwrap(), vec![typed]);
}

#[test]
fn graphml_written_by_networkx_reads() {
    let gs = io::read_graphml(common::data("karate_networkx.graphml")).unwrap();
    assert_eq!(gs.len(), 1);
    let g = &gs[0];
    assert_eq!(
        g.edges().collect::<Vec<_>>(),
        karate().edges().collect::<Vec<_>>()
    );
    // type = 1 for the Officer's club: 17 of the 34 members.
    assert_eq!(g.node_types().unwrap().iter().sum::<usize>(), 17);
}

#[test]
fn malformed_graphml_is_a_typed_error() {
    let head = r#"<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">"#;
    let cases = [
        (
            format!("{head}<graph edgedefault=\"undirected\"><node id=\"a\"/>"),
            "truncated",
        ),
        (
            format!("{head}<graph edgedefault=\"directed\"></graph></graphml>"),
            "directed",
        ),
        (
            format!(
                "{head}<graph edgedefault=\"undirected\"><node id=\"a\"/><edge source=\"a\" target=\"b\"/></graph></graphml>"
            ),
            "unknown node",
        ),
        (
            format!(
                "{head}<graph edgedefault=\"undirected\"><node id=\"a\"/><node id=\"a\"/></graph></graphml>"
            ),
            "twice",
        ),
        (
            format!(
                "{head}<key id=\"t\" for=\"node\" attr.name=\"type\" attr.type=\"long\"/><graph edgedefault=\"undirected\">\
                 <node id=\"a\"><data key=\"t\">x</data></node></graph></graphml>"
            ),
            "node type",
        ),
        (format!("{head}</graphml>"), "no <graph>"),
        ("<graph></graphml>".to_string(), "GraphML"),
        ("not xml at all".to_string(), "GraphML"),
    ];
    for (text, needle) in cases {
        let err = io::parse_graphml(&text).expect_err(needle);
        let msg = err.to_string();
        assert!(matches!(err, GraphError::Malformed { .. }), "{needle}: {msg}");
        assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
    }
    let self_loop = format!(
        "{head}<graph edgedefault=\"undirected\"><node id=\"a\"/><edge source=\"a\" target=\"a\"/></graph></graphml>"
    );
    assert!(matches!(
        io::parse_graphml(&self_loop),
        Err(GraphError::SelfLoop { node: 0 })
    ));
}

/// Needs `python3` with networkx: `cargo test -p diffusion-graph --test io -- --ignored`.
#[test]
#[ignore]
fn networkx_reads_our_graphml() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.graphml");
    let typed = Graph::from_typed_edges(5, &[(0, 1), (1, 2), (3, 4)], vec![2, 0, 1, 1, 0]).unwrap();
    io::write_graphml(&p, &[typed]).unwrap();
    let script = "import sys, networkx as nx\n\
                  g = nx.read_graphml(sys.argv[1], node_type=int)\n\
                  print(g.number_of_nodes(), sorted(tuple(sorted(e)) for e in g.edges()), [g.nodes[u]['type'] for u in range(5)])";
    let out = std::process::Command::new("python3")
        .args(["-c", script, p.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "5 [(0, 1), (1, 2), (3, 4)] [2, 0, 1, 1, 0]"
    );
}
