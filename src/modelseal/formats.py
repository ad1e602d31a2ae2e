"""Every name modelseal shares with other tools, once: media types, artifact types,
annotations, payload types and predicate types.

These strings are the contract with registries, ModelPack, in-toto, Sigstore and CycloneDX
tools (docs/format.md). Every module imports them from here; none spells one itself.
"""

from __future__ import annotations

# -- OCI image and distribution -------------------------------------------------------------
MANIFEST_V1 = "application/vnd.oci.image.manifest.v1+json"
INDEX_V1 = "application/vnd.oci.image.index.v1+json"
EMPTY_V1 = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (MANIFEST_V1, INDEX_V1, DOCKER_MANIFEST_V2, DOCKER_MANIFEST_LIST)
ANN_TITLE = "org.opencontainers.image.title"
ANN_CREATED = "org.opencontainers.image.created"
ANN_VERSION = "org.opencontainers.image.version"

# -- CNCF ModelPack -------------------------------------------------------------------------
ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
ROLES = ("weight", "weight.config", "doc", "code", "dataset")
MEDIA_TYPES = {role: f"application/vnd.cncf.model.{role}.v1.raw" for role in ROLES}
ROLE_BY_MEDIA_TYPE = {v: k for k, v in MEDIA_TYPES.items()}
TAR_MEDIA_TYPES = {role: f"application/vnd.cncf.model.{role}.v1.tar" for role in ROLES}
ROLE_BY_TAR_MEDIA_TYPE = {v: k for k, v in TAR_MEDIA_TYPES.items()}
ANN_FILEPATH = "org.cncf.model.filepath"
ANN_NAME = "org.cncf.model.name"

# -- modelseal's own ------------------------------------------------------------------------
FILE_LIST_MEDIA_TYPE = "application/vnd.modelseal.file-list.v1+json"
LAYOUT_ARTIFACT_TYPE = "application/vnd.modelseal.layout.v1+json"
ANN_BLOB = "dev.modelseal.referrer.blob"
ANN_TRUNCATED = "dev.modelseal.referrers.truncated"
AUDIT_BUNDLE_FORMAT = "https://modelseal.dev/audit-bundle/v1"

# -- Sigstore bundles -----------------------------------------------------------------------
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_MEDIA_TYPES = (
    BUNDLE_MEDIA_TYPE,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
)
ANN_BUNDLE_CONTENT = "dev.sigstore.bundle.content"
ANN_PREDICATE_TYPE = "dev.sigstore.bundle.predicateType"
SIGSTORE_KEYTYPE = "sigstore-oidc"

# -- RFC 3161 time stamps -------------------------------------------------------------------
TSA_QUERY_MEDIA_TYPE = "application/timestamp-query"
TSA_REPLY_MEDIA_TYPE = "application/timestamp-reply"

# -- in-toto statements, layouts and predicates ---------------------------------------------
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
STATEMENT_TYPES = (STATEMENT_TYPE, "https://in-toto.io/Statement/v0.1")
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
LAYOUT_MEDIA_TYPE = "application/vnd.in-toto.layout+json"
LINK_PREDICATE = "https://in-toto.io/attestation/link/v0.3"
SLSA_PROVENANCE_PREDICATE = "https://slsa.dev/provenance/v1"
TEST_RESULT_PREDICATE = "https://in-toto.io/attestation/test-result/v0.1"
VSA_PREDICATE = "https://slsa.dev/verification_summary/v1"
BUILD_TYPE = "https://modelseal.dev/training/v1"
SAFETY_PREDICATE = "https://modelseal.dev/attestation/model-safety/v1"
LIFECYCLE_PREDICATE = "https://modelseal.dev/attestation/lifecycle/v1"
LIFECYCLE_ACTIONS = ("promote", "deprecate", "retire", "correct")  # its ``action`` values
MODEL_SIGNING_PREDICATE = "https://model_signing/signature/v1.0"

# -- CycloneDX ------------------------------------------------------------------------------
BOM_PREDICATE = "https://cyclonedx.org/bom"
BOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
BOM_XML_MEDIA_TYPE = "application/vnd.cyclonedx+xml"
