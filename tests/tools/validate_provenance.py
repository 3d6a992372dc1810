"""Validates an in-toto statement with a SLSA provenance v1 predicate using in-toto's own
Python bindings (in-toto-attestation): the Statement's validate(), a strict protobuf parse
of the predicate (unknown or mistyped fields fail) and validate() on every resource
descriptor. Prints one JSON line: {"ok": true, "subjects": N, "dependencies": N, "byproducts": N}.

    python validate_provenance.py STATEMENT.json
"""
import json
import sys

from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement

raw = open(sys.argv[1], encoding="utf-8").read()
statement = Statement.copy_from_pb(json_format.Parse(raw, statement_pb2.Statement()))
statement.validate()
doc = json.loads(raw)
if doc["predicateType"] != "https://slsa.dev/provenance/v1":
    raise SystemExit(f"predicateType is {doc['predicateType']}")
prov = json_format.Parse(json.dumps(doc["predicate"]), provenance_pb2.Provenance())
if not prov.build_definition.build_type:
    raise SystemExit("buildDefinition.buildType is empty")
if not prov.run_details.builder.id:
    raise SystemExit("runDetails.builder.id is empty")
for d in prov.build_definition.resolved_dependencies:
    ResourceDescriptor.copy_from_pb(d).validate()
for d in prov.run_details.byproducts:
    ResourceDescriptor.copy_from_pb(d).validate()
print(json.dumps({
    "ok": True,
    "subjects": len(doc["subject"]),
    "dependencies": len(prov.build_definition.resolved_dependencies),
    "byproducts": len(prov.run_details.byproducts),
}))
