use super::*;

fn agent(n: u128) -> AgentId {
    AgentId::from_uuid(Uuid::from_u128(n))
}

fn tunnel(n: u128) -> AgentMode {
    AgentMode::Tunnel {
        session: SessionId::from_uuid(Uuid::from_u128(n)),
    }
}

#[test]
fn announces_only_what_changed_numbered_and_everything_on_reset() {
    let mut announced = Announced::default();
    let first = announced.update("a", vec![(agent(1), AgentMode::Heartbeat)]);
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].seq, first[0].up.len()), (1, 1));
    assert!(
        announced
            .update("a", vec![(agent(1), AgentMode::Heartbeat)])
            .is_empty()
    );

    let changed = announced.update(
        "a",
        vec![(agent(1), tunnel(9)), (agent(2), AgentMode::Heartbeat)],
    );
    assert_eq!(changed[0].seq, 2);
    assert_eq!(changed[0].up.len(), 2);
    let since_1 = first[0].up[0].since;
    let moved = changed[0].up.iter().find(|e| e.agent == agent(1).as_uuid());
    assert_eq!(
        moved.map(|e| (e.session, e.since)),
        Some((Some(Uuid::from_u128(9)), since_1))
    );

    let gone = announced.update("a", vec![(agent(2), AgentMode::Heartbeat)]);
    assert_eq!(gone[0].down, vec![agent(1).as_uuid()]);
    assert!(gone[0].up.is_empty());

    announced.resend = true;
    let all = announced.update("a", vec![(agent(2), AgentMode::Heartbeat)]);
    assert_eq!(all.len(), 1);
    assert!(all[0].reset);
    assert_eq!(all[0].seq, 4);
    assert_eq!(all[0].up.len(), 1);
    assert_eq!(announced.heartbeat("a").seq, 4);
}

#[test]
fn large_announcements_come_in_chunks_numbered_in_order() {
    let mut announced = Announced {
        resend: true,
        ..Announced::default()
    };
    let many: Vec<_> = (0..(2 * CHUNK as u128 + 1))
        .map(|n| (agent(n), AgentMode::Heartbeat))
        .collect();
    let out = announced.update("a", many);
    assert_eq!(out.len(), 3);
    assert_eq!(out.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(
        out.iter().map(|a| a.reset).collect::<Vec<_>>(),
        vec![true, false, false]
    );
    assert_eq!(out.iter().map(|a| a.up.len()).sum::<usize>(), 2 * CHUNK + 1);

    let view = ClusterView::new("b".to_owned());
    for a in &out {
        assert!(!view.apply(a).resend);
    }
    assert_eq!(
        view.mode(agent(2 * CHUNK as u128)),
        Some(AgentMode::Heartbeat)
    );
}

fn announcement(seq: u64, reset: bool, up: &[(u128, Option<u128>)], down: &[u128]) -> Announcement {
    Announcement {
        node: "a".to_owned(),
        seq,
        reset,
        up: up
            .iter()
            .map(|(a, s)| Entry {
                agent: Uuid::from_u128(*a),
                session: s.map(Uuid::from_u128),
                since: 100,
            })
            .collect(),
        down: down.iter().map(|a| Uuid::from_u128(*a)).collect(),
    }
}

#[test]
fn a_node_heard_first_or_out_of_order_is_asked_for_everything_again() {
    let view = ClusterView::new("b".to_owned());
    // First heard mid-stream: nothing applied, a resend asked.
    let applied = view.apply(&announcement(5, false, &[(1, None)], &[]));
    assert!(applied.resend);
    assert_eq!(view.mode(agent(1)), None);
    // Asked at most once a second.
    assert!(
        !view
            .apply(&announcement(6, false, &[(1, None)], &[]))
            .resend
    );

    let applied = view.apply(&announcement(7, true, &[(1, None), (2, Some(9))], &[]));
    assert!(!applied.resend);
    assert_eq!(applied.arrived.len(), 2);
    assert_eq!(view.mode(agent(2)), Some(tunnel(9)));
    let w = view.whereabouts(agent(1));
    assert_eq!(
        w.map(|w| (w.node.to_string(), w.reachable)),
        Some(("a".to_owned(), true))
    );

    // The heartbeat of the same number changes nothing; the next number applies.
    assert!(!view.apply(&announcement(7, false, &[], &[])).resend);
    let applied = view.apply(&announcement(8, false, &[(2, None)], &[1]));
    assert!(
        applied.arrived.is_empty(),
        "a mode change is not an arrival"
    );
    assert_eq!(view.mode(agent(1)), None);
    assert_eq!(view.mode(agent(2)), Some(AgentMode::Heartbeat));

    // A gap: what is known stays (last known presence), a resend is due.
    let applied = view.apply(&announcement(10, false, &[(3, None)], &[]));
    assert_eq!(view.mode(agent(3)), None);
    assert_eq!(view.mode(agent(2)), Some(AgentMode::Heartbeat));
    let _ = applied;

    // A reset replaces everything known of the node.
    view.apply(&announcement(11, true, &[(3, None)], &[]));
    assert_eq!(view.mode(agent(2)), None);
    assert_eq!(view.mode(agent(3)), Some(AgentMode::Heartbeat));

    view.forget("a");
    assert_eq!(view.mode(agent(3)), None);
    assert!(view.nodes().is_empty());
}

#[test]
fn an_agent_that_moves_between_other_nodes_arrives_at_the_new_one() {
    let view = ClusterView::new("me".to_owned());
    let mut on_a = announcement(1, true, &[(1, None)], &[]);
    view.apply(&on_a);
    let mut on_c = announcement(1, true, &[(1, None)], &[]);
    on_c.node = "c".to_owned();
    let applied = view.apply(&on_c);
    assert_eq!(applied.arrived, vec![(agent(1), 100)]);
    assert_eq!(
        view.whereabouts(agent(1)).map(|w| w.node.to_string()),
        Some("c".to_owned())
    );
    // a's late "down" for it leaves c's entry alone.
    on_a.seq = 2;
    on_a.reset = false;
    on_a.up.clear();
    on_a.down = vec![Uuid::from_u128(1)];
    view.apply(&on_a);
    assert_eq!(
        view.whereabouts(agent(1)).map(|w| w.node.to_string()),
        Some("c".to_owned())
    );
}

#[test]
fn forgetting_a_lost_node_keeps_its_agents_that_moved_elsewhere() {
    let view = ClusterView::new("a".to_owned());
    let mut on_c = announcement(1, true, &[(1, None), (2, None)], &[]);
    on_c.node = "c".to_owned();
    view.apply(&on_c);
    let mut on_b = announcement(1, true, &[(1, None)], &[]);
    on_b.node = "b".to_owned();
    view.apply(&on_b);
    view.forget("c");
    assert_eq!(
        view.whereabouts(agent(1)).map(|w| w.node.to_string()),
        Some("b".to_owned())
    );
    assert_eq!(view.mode(agent(2)), None);
    // And a reset from c (a restart) does not take agent 1 from b either.
    view.apply(&on_c);
    view.apply(&on_b);
    let mut reset_c = announcement(2, true, &[(3, None)], &[]);
    reset_c.node = "c".to_owned();
    view.apply(&reset_c);
    assert_eq!(
        view.whereabouts(agent(1)).map(|w| w.node.to_string()),
        Some("b".to_owned())
    );
}
