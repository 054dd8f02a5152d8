"""Route 53 sink: make Amazon Route 53 answer like the routing table (see README.md here).

``records`` builds the desired records (pure), ``plan`` diffs them against what
Route 53 holds and packs the changes into batches (pure), ``client`` is the
boto3 adapter (retries, rate, pagination, INSYNC), ``sink`` ties them together
for the leader, and ``render`` prints a plan for operators.
"""

from steering.route53.plan import ChangePlan, compute_plan
from steering.route53.render import plan_to_dict, render_plan_json, render_plan_text
from steering.route53.sink import Route53Sink, SyncResult

__all__ = ["ChangePlan", "Route53Sink", "SyncResult", "compute_plan", "plan_to_dict", "render_plan_json",
           "render_plan_text"]
