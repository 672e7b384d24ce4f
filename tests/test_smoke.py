from tests.conftest import identify, track


def test_a_trait_and_an_audience_end_to_end(workspace):
    ws = workspace("""
        traits:
          - name: reports_30d
            count: {event: Report Generated, window: 30d}
          - name: plan
            trait: {trait: plan}
        audiences:
          - name: power
            where: reports_30d >= 2 AND plan = 'pro'
    """)
    ws.land(
        identify("u1", "2026-06-01T00:00:00Z", plan="pro"),
        track("u1", "Report Generated", "2026-06-10T00:00:00Z"),
        track("u1", "Report Generated", "2026-06-11T00:00:00Z"),
        track("u2", "Report Generated", "2026-06-11T00:00:00Z"),
    )
    result = ws.run()
    assert ws.traits()["u1"]["reports_30d"] == 2
    assert ws.members("power") == {"u1"}
    assert result.audience_sizes == {"power": 1}
