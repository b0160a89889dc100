"""The one exception hierarchy of trusted_pools.

Every error the project raises on purpose is a :class:`TrustedPoolsError`.
Subclasses only set ``_msg_fmt``, a template with named fields; the keyword
arguments given at raise time are kept in ``kwargs`` so they survive an RPC
round trip and let callers act on the details (the failing PCR, line, ...).

This module imports nothing outside the standard library so that the evidence
library (``trusted_pools.tpm``) can use it without pulling in oslo.

Branches, by meaning:

* :class:`Invalid` - the caller or operator gave something unusable.
* :class:`NotFound`, :class:`Conflict` - state lookups and races.
* :class:`TemporaryFailure` - try again later (broker, TPM, database away).
* :class:`EvidenceError` - attestation evidence was rejected. Anything in this
  branch means "not trusted"; callers must never treat it as retryable.
* :class:`TPMError` - the local TPM refused a command.
"""

from __future__ import annotations

from typing import Any


class TrustedPoolsError(Exception):
    """Root of every error raised on purpose by trusted_pools."""

    _msg_fmt = "An unknown error occurred."

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self._msg_fmt % kwargs
            except (KeyError, TypeError, ValueError):
                # A wrong template must not hide the original problem.
                message = "%s (%r)" % (self._msg_fmt, kwargs)
        self.message = message
        super().__init__(message)


# --- Invalid -----------------------------------------------------------------

class Invalid(TrustedPoolsError):
    _msg_fmt = "Invalid input: %(reason)s"


class InvalidParameterValue(Invalid):
    _msg_fmt = "Invalid value for %(name)s: %(reason)s"


class ConfigInvalid(Invalid):
    _msg_fmt = ("Invalid configuration: %(reason)s. Fix the option in "
                "trusted-pools.conf and restart the service.")


class UnsupportedAlgorithm(Invalid):
    _msg_fmt = ("Unsupported algorithm %(algorithm)s: %(reason)s. Supported: "
                "SHA-1, SHA-256, SHA-384, SHA-512 hashes; RSA and ECC "
                "(NIST P-256/P-384/P-521) keys.")


# --- Not found / conflict ------------------------------------------------------

class NotFound(TrustedPoolsError):
    _msg_fmt = "Resource could not be found: %(reason)s"


class HostNotFound(NotFound):
    _msg_fmt = ("Host %(host)s is not registered. Enroll it with "
                "'openstack trusted host enroll' first.")


class Conflict(TrustedPoolsError):
    _msg_fmt = "Conflict: %(reason)s"


# --- Temporary failures --------------------------------------------------------

class TemporaryFailure(TrustedPoolsError):
    _msg_fmt = "Temporary failure, retry later: %(reason)s"


class TPMUnreachable(TemporaryFailure):
    _msg_fmt = ("Cannot reach the TPM at %(tcti)s: %(reason)s. Check that the "
                "device exists (or that swtpm runs) and the [tpm] tcti option.")


# --- TPM command errors ----------------------------------------------------------

class TPMError(TrustedPoolsError):
    _msg_fmt = ("TPM command %(command)s failed with response code "
                "%(rc)#x (%(decoded)s).")


# --- Evidence (attestation) branch ---------------------------------------------

class EvidenceError(TrustedPoolsError):
    """Evidence was rejected. Always means "not trusted"."""

    _msg_fmt = "Evidence rejected: %(reason)s"


class MalformedEvidence(EvidenceError):
    """Bytes that do not parse as the structure they claim to be."""

    _msg_fmt = "Malformed %(what)s: %(reason)s"


class TruncatedEvidence(MalformedEvidence):
    _msg_fmt = ("Truncated %(what)s: needed %(needed)d bytes at offset "
                "%(offset)d, only %(available)d left")


class EvidenceTooLarge(MalformedEvidence):
    _msg_fmt = ("%(what)s is %(size)d bytes, over the limit of %(limit)d "
                "bytes; raise the limit only if the host is known to "
                "produce logs this large")


class InvalidQuote(EvidenceError):
    _msg_fmt = "Invalid quote: %(reason)s"


class InvalidSignature(InvalidQuote):
    # Deliberately carries no detail: a signature either verifies or not.
    _msg_fmt = "Signature verification failed"


class SignatureSchemeMismatch(InvalidQuote):
    _msg_fmt = ("Signature scheme %(scheme)s does not match the key "
                "(%(reason)s)")


class QuoteMagicInvalid(InvalidQuote):
    _msg_fmt = ("Attestation magic is %(magic)#x, not TPM_GENERATED_VALUE "
                "(0xff544347): the structure was not produced by a TPM")


class QuoteTypeInvalid(InvalidQuote):
    _msg_fmt = "Attestation type is %(type)#x, expected %(expected)#x"


class NonceMismatch(InvalidQuote):
    _msg_fmt = ("Quote extraData does not match the challenge nonce: the "
                "quote is stale or replayed")


class PCRSelectionMismatch(InvalidQuote):
    _msg_fmt = "PCR selection mismatch: %(reason)s"


class PCRDigestMismatch(InvalidQuote):
    _msg_fmt = ("The PCR values given do not hash to the digest signed in "
                "the quote (bank %(bank)s)")


class ReplayMismatch(EvidenceError):
    """A log does not replay to the quoted PCR values."""

    _msg_fmt = ("The %(log)s does not replay to the quoted PCRs: bank "
                "%(bank)s, PCR(s) %(pcrs)s")


class IMAEntryInvalid(EvidenceError):
    _msg_fmt = "IMA log line %(line)d is invalid: %(reason)s"


class AKAttributesRejected(EvidenceError):
    _msg_fmt = ("Attestation key rejected: attribute %(attribute)s must be "
                "%(expected)s. Create the AK as a restricted signing key "
                "(fixedTPM, fixedParent, sensitiveDataOrigin, not decrypt).")


class AKSchemeRejected(EvidenceError):
    _msg_fmt = ("Attestation key rejected: its signing scheme is "
                "%(scheme)s. Create the AK with a scheme fixed at creation "
                "(ECDSA, RSASSA or RSAPSS with SHA-256 or stronger, e.g. "
                "'tpm2_createak -G ecc -s ecdsa -g sha256'): with "
                "TPM_ALG_NULL the caller of TPM2_Quote picks the hash, "
                "SHA-1 included.")


class QuoteHashRefused(InvalidQuote):
    _msg_fmt = ("Quote signed with %(hash)s, which this verifier refuses "
                "(%(reason)s)")


class PolicyViolation(EvidenceError):
    _msg_fmt = "Policy violated: %(reason)s"


class EventLogUnverifiable(EvidenceError):
    """Nothing in a log could be compared with the quoted PCRs."""

    _msg_fmt = ("The %(log)s cannot be checked against the quoted PCRs: "
                "%(reason)s")


# --- Host TPM and enrollment (trusted_pools.tpm.device, attestation) ---------

class TPMLockout(TPMError):
    """The TPM is in dictionary-attack lockout (TPM_RC_LOCKOUT, 0x921)."""

    _msg_fmt = ("TPM command %(command)s failed with response code "
                "%(rc)#x (%(decoded)s). Do not retry: wait for the "
                "lockout recovery time or reset it with the lockout "
                "authorization.")


class EnrollmentRejected(EvidenceError):
    """A host's enrollment evidence was not accepted; nothing registered."""

    _msg_fmt = "Enrollment of host %(host)s rejected: %(reason)s"


class EKCertificateUntrusted(EnrollmentRejected):
    _msg_fmt = ("Enrollment of host %(host)s rejected: the EK certificate "
                "does not chain to a trusted CA: %(reason)s (issuer "
                "%(issuer)s)")


class EKMismatch(EnrollmentRejected):
    _msg_fmt = ("Enrollment of host %(host)s rejected: the EK public key "
                "does not match the EK certificate (%(reason)s)")


class ChallengeNotFound(EnrollmentRejected):
    _msg_fmt = ("Enrollment challenge %(challenge)s is unknown or was "
                "already answered: start the enrollment again")


class ChallengeExpired(EnrollmentRejected):
    _msg_fmt = ("Enrollment challenge %(challenge)s for host %(host)s "
                "expired at %(expired_at)s: start the enrollment again")


class CredentialActivationFailed(EnrollmentRejected):
    # No detail on purpose: the secret either matches or not.
    _msg_fmt = ("Enrollment of host %(host)s rejected: the activated "
                "credential does not match the challenge (the AK is not "
                "in the TPM that holds this EK)")


class EKNotApproved(EnrollmentRejected):
    """The host has no approved EK yet, or the approval names another EK:
    the operator compares the hash with the TPM's record and approves it."""

    _msg_fmt = ("Enrollment of host %(host)s refused: its TPM presents the "
                "EK whose public key has SHA-256 %(presented)s, %(reason)s. "
                "Check that hash against the host's TPM (see README, "
                "'Running a pool') and run 'openstack trusted host "
                "enroll %(host)s --ek-sha256 %(presented)s'.")


class EKChanged(Conflict):
    """An enrolled host presents a different EK: another TPM (a swap, or a
    host relaying another host's TPM). Only the operator may accept it."""

    _msg_fmt = ("Enrollment of host %(host)s refused: it is bound to the EK "
                "with public key SHA-256 %(approved)s, but presents "
                "%(presented)s. If the host's TPM or motherboard was "
                "replaced, run 'openstack trusted host reset-enrollment "
                "%(host)s' and enroll it again with --ek-sha256.")


class AKAlreadyRegistered(Conflict):
    _msg_fmt = ("The AK with name %(ak_name)s is already registered to "
                "host %(other)s: one attestation key cannot speak for two "
                "hosts.")


class HostAlreadyEnrolled(Conflict):
    _msg_fmt = ("Host %(host)s is already enrolled; remove its "
                "registration before enrolling it again")


# --- Signed attestation results (trusted_pools.protocol.results) ---------

class SignedResultError(TrustedPoolsError):
    """A signed attestation result was rejected.

    Consumers (the scheduler filter, migration checks) must treat every
    error of this branch as "not trusted"; none of them is retryable with the
    same token.
    """

    _msg_fmt = "Signed attestation result rejected: %(reason)s"


class ResultMalformed(SignedResultError):
    _msg_fmt = "Malformed signed attestation result: %(reason)s"


class ResultAlgorithmRejected(SignedResultError):
    _msg_fmt = ("Signed attestation result algorithm %(alg)s rejected: "
                "%(reason)s")


class ResultKeyUnknown(SignedResultError):
    _msg_fmt = ("Signed attestation result names key id %(kid)s, which is "
                "not among the trusted conductor keys; fetch the conductor's "
                "current public key")


class ResultSignatureInvalid(SignedResultError):
    # Deliberately carries no detail: a signature either verifies or not.
    _msg_fmt = "Signed attestation result signature verification failed"


class ResultExpired(SignedResultError):
    _msg_fmt = ("Signed attestation result expired at %(expires_at)d "
                "(now %(now)d, leeway %(leeway)d s)")


class ResultNotYetValid(SignedResultError):
    _msg_fmt = ("Signed attestation result is issued at %(issued_at)d, in "
                "the future (now %(now)d, leeway %(leeway)d s): check the "
                "clocks of conductor and consumer")


# --- Freshness (appended by the lead) -------------------------------------------

class StaleEvidence(EvidenceError):
    _msg_fmt = ("Evidence from %(host)s answers attestation epoch "
                "%(epoch)s, which is unknown or over: %(reason)s")


class QuoteReplayed(EvidenceError):
    _msg_fmt = ("Quote from %(host)s does not move the TPM clock forward "
                "(%(reason)s): an old quote was replayed")


class HostNotOwned(Conflict):
    _msg_fmt = ("Host %(host)s is attested by conductor %(owner)s on the "
                "hash ring, not by %(conductor)s: send the request to "
                "%(owner)s")


class HostReportRefused(Conflict):
    """A host's own report (not evidence) that the conductor refused: too
    large or malformed. Nothing of it is kept."""

    _msg_fmt = "Host %(host)s sent a %(what)s that was refused: %(reason)s"


class OperationInProgress(Conflict):
    _msg_fmt = ("Host %(host)s already has a %(kind)s operation in progress "
                "(%(operation)s); wait for it to end (GET "
                "/v1/hosts/%(host)s/operations/%(operation)s)")


# --- deep attestation (issue 11) -------------------------------------------

class DeepAttestationError(EvidenceError):
    """Deep attestation (trusted_pools.verifier.deep) refused an instance
    or a whole batch; ``subject`` names it."""

    _msg_fmt = "Deep attestation of %(subject)s refused: %(reason)s"


class HostNotTrusted(DeepAttestationError):
    _msg_fmt = ("Deep attestation of %(subject)s refused: its host is not "
                "trusted: %(reason)s")


class HostVerdictStale(DeepAttestationError):
    _msg_fmt = ("Deep attestation of %(subject)s refused: its host's verdict "
                "is stale: %(reason)s")


class HostQuoteInvalid(DeepAttestationError):
    _msg_fmt = ("Deep attestation of %(subject)s refused: the host quote "
                "does not verify against the host's registration: "
                "%(reason)s")


class HostQuoteNotCommitted(DeepAttestationError):
    _msg_fmt = ("Deep attestation of %(subject)s refused: the host quote "
                "does not commit to the VM quote: %(reason)s")


class VMQuoteInvalid(DeepAttestationError):
    _msg_fmt = ("Deep attestation of %(subject)s refused: the vTPM quote "
                "does not verify: %(reason)s")


class VMNonceMismatch(VMQuoteInvalid):
    _msg_fmt = ("Deep attestation of %(subject)s refused: the vTPM quote is "
                "not over a nonce issued for this instance: %(reason)s")


class VMQuoteReplayed(VMQuoteInvalid):
    _msg_fmt = ("Deep attestation of %(subject)s refused: the vTPM quote is "
                "replayed: %(reason)s")


class VMChainRefused(DeepAttestationError):
    _msg_fmt = ("Deep attestation of %(subject)s refused: the vTPM's chain "
                "to its host does not verify: %(reason)s")


class VMChainForeignHost(VMChainRefused):
    _msg_fmt = ("Deep attestation of %(subject)s refused: the vTPM's chain "
                "leads to another host: %(reason)s")


class VMPolicyViolation(DeepAttestationError):
    _msg_fmt = ("Deep attestation of %(subject)s: the vTPM PCRs do not match "
                "the instance policy: %(reason)s")


class InstanceVerdictNotFound(NotFound):
    _msg_fmt = "Instance %(instance)s has no deep-attestation verdict"


class InstancePolicyNotFound(NotFound):
    _msg_fmt = "Instance policy %(policy)s version %(version)s does not exist"


class InstancePolicyAssignmentNotFound(NotFound):
    _msg_fmt = "No instance policy is assigned to %(kind)s %(target)s"


class InstancePolicyInUse(Conflict):
    _msg_fmt = ("Instance policy %(policy)s is assigned to %(targets)s: "
                "unassign it first")


class InstanceNotCapturable(Conflict):
    _msg_fmt = ("Cannot capture an instance policy from instance "
                "%(instance)s: %(reason)s")


class VTPMReportNotFound(NotFound):
    _msg_fmt = ("Host %(host)s has no vTPM report yet; ask its agent for "
                "one with POST /v1/hosts/%(host)s/vtpms")


class OperationNotFound(NotFound):
    _msg_fmt = "Host %(host)s has no operation %(operation)s"


class ConductorUnreachable(TemporaryFailure):
    """trusted-pools-api's call to a conductor got no answer in time."""

    _msg_fmt = ("Conductor %(conductor)s did not answer %(method)s for "
                "host %(host)s within %(seconds)d s: %(reason)s")


class AgentUnreachable(TemporaryFailure):
    """A conductor's call to a host's agent got no answer."""

    _msg_fmt = ("The agent of host %(host)s did not answer %(method)s "
                "(%(reason)s): is trusted-pools-agent running there and "
                "connected to the agent bus?")


# --- Persistence (trusted_pools.db) ------------------------------------------

class DatabaseUnavailable(TemporaryFailure):
    _msg_fmt = ("The database is unavailable: %(reason)s. Check that it "
                "runs and the [database] connection option.")


class HostAlreadyExists(Conflict):
    _msg_fmt = "A host named %(host)s already exists"


class RegistrationNotFound(NotFound):
    _msg_fmt = ("Host %(host)s has no TPM registration; enroll it before "
                "attesting it")


class HostNotEnrolled(NotFound):
    """The host exists but is not enrolled (an operator's reset, or never
    finished): nothing it sends is judged until it enrolls again."""

    _msg_fmt = ("Host %(host)s is %(state)s, not enrolled: it is not "
                "attested until 'openstack trusted host enroll "
                "%(host)s --ek-sha256 ...' succeeds")


class EKAlreadyRegistered(Conflict):
    _msg_fmt = ("The EK with public key SHA-256 "
                "%(fingerprint)s is already bound to host %(other)s: one "
                "TPM cannot vouch for two hosts. Remove the other host "
                "first if it was rebuilt under a new name.")


class PolicyNotFound(NotFound):
    _msg_fmt = "Policy %(policy)s version %(version)s does not exist"


class ConductorNotFound(NotFound):
    _msg_fmt = ("Conductor %(conductor)s is not registered; it must "
                "register before it sends heartbeats")


class ConductorAlreadyRegistered(Conflict):
    _msg_fmt = ("Conductor %(conductor)s is already registered and online; "
                "is another conductor running with the same host name?")


class ConcurrentUpdate(Conflict):
    _msg_fmt = ("%(what)s was changed by someone else since it was read "
                "(%(reason)s); read it again and retry")


class DatabaseError(TrustedPoolsError):
    """A database failure that is neither a conflict nor an outage."""

    _msg_fmt = "Database error: %(reason)s"


class DatabaseSchemaMissing(DatabaseError):
    """The database has not been created or upgraded for this release."""

    _msg_fmt = ("The database has no table %(table)s: create or upgrade "
                "its schema with 'trusted-pools-manage db sync' (it reads "
                "[database] connection from the same configuration)")


# --- Golden-measurement policies (trusted_pools.verifier.policy) ---------

class PolicyInvalid(InvalidParameterValue):
    """A policy body failed validation; nothing was stored or applied."""

    _msg_fmt = ("Policy %(policy)s is invalid at %(field)s: %(reason)s")


# --- Placement traits and response to distrust ---------------------------
# (trusted_pools.nova.remediation: traits, distrust)

class ServiceUnavailable(TemporaryFailure):
    _msg_fmt = ("The %(service)s API cannot be reached or failed: "
                "%(reason)s. Check the [%(group)s] endpoint and credentials; "
                "the next round retries.")


class ServiceAPIError(TrustedPoolsError):
    """An OpenStack API refused a request (a 4xx other than a conflict)."""

    _msg_fmt = ("The %(service)s API answered %(method)s %(path)s with HTTP "
                "%(status)s: %(reason)s")


class ResourceProviderNotFound(NotFound):
    _msg_fmt = ("Placement has no resource provider named %(name)s: the "
                "host is not a compute node known to Placement (or its "
                "node name differs from its host name)")


# --- Who may ask an agent (trusted_pools.protocol.agent_requests) ----------

class NotAuthorized(TrustedPoolsError):
    """The caller could not prove it may ask for this."""

    _msg_fmt = "Not authorized: %(reason)s"


class AgentRequestRefused(NotAuthorized):
    """A request to an agent did not carry a valid conductor signature.

    The agent did nothing for it: no TPM command ran, no evidence was sent.
    """

    _msg_fmt = ("The agent of %(host)s refused %(method)s: %(reason)s. Only "
                "a conductor whose public key is pinned in the agent's "
                "[agent] conductor_keys_file may ask it")


# --- Host binding keys and vTPMs (trusted_pools.tpm.sealing, trusted_pools.vtpm)

class BindingKeyRejected(EvidenceError):
    """A host binding key (the TPM-resident decrypt key secrets are wrapped
    to) or its TPM2_Certify evidence failed a check: nothing was wrapped."""

    _msg_fmt = "Host binding key rejected: %(reason)s"


class VTPMError(TrustedPoolsError):
    _msg_fmt = "vTPM of instance %(instance)s: %(reason)s"


class VTPMNotFound(NotFound):
    _msg_fmt = "No vTPM for instance %(instance)s on this host"


class VTPMExists(Conflict):
    _msg_fmt = "A vTPM for instance %(instance)s already exists on this host"


class VTPMInvalidState(Conflict):
    _msg_fmt = ("vTPM of instance %(instance)s is %(state)s: %(operation)s "
                "needs it %(expected)s")


class VTPMStateUnusable(VTPMError):
    """The vTPM's state at rest is missing, corrupted or does not decrypt.
    The vTPM was not started: a fresh TPM is never substituted."""

    _msg_fmt = ("The state of the vTPM of instance %(instance)s cannot be "
                "used: %(reason)s. The vTPM was not started; restore its "
                "state directory from a backup or destroy it")


class VTPMKeyUnavailable(VTPMError):
    """This host's TPM did not release the vTPM's state key (another host's
    state, a damaged wrapped key, or a boot the key's PCR policy refuses)."""

    _msg_fmt = ("This host's TPM does not release the state key of the vTPM "
                "of instance %(instance)s: %(reason)s")


class VTPMStartFailed(VTPMError):
    _msg_fmt = ("swtpm for the vTPM of instance %(instance)s did not start: "
                "%(reason)s")


class VTPMOperationNotSupported(Invalid):
    _msg_fmt = ("The vTPM driver %(driver)s does not support %(operation)s: "
                "%(reason)s")


class VTPMDriverLoadFailed(ConfigInvalid):
    _msg_fmt = ("Invalid configuration: vTPM driver %(driver)s could not be "
                "loaded: %(reason)s. Fix the [vtpm] driver option in "
                "trusted-pools.conf and restart the service.")


# --- Nova vTPM secrets (trusted_pools.conductor.keys, trusted_pools.keymanager)

class SecretNotFound(NotFound):
    """No such secret, or not one the caller's project owns (the two are
    not told apart: a project cannot learn which secret ids exist)."""

    _msg_fmt = "Secret %(secret)s not found"


class BindingKeyMissing(Conflict):
    _msg_fmt = ("Host %(host)s has no binding key certified under its "
                "current enrollment (generation %(generation)s): %(reason)s")


class KeyReleaseRefused(NotAuthorized):
    """The key service withheld a secret from a host: its verdict is not
    trusted, not fresh, below the secret's level, or the host has no
    certified binding key. ``reason`` says which."""

    _msg_fmt = ("%(host)s is %(status)s: %(reason)s; the vTPM key is "
                "withheld")


class KeyEncryptionKeyInvalid(ConfigInvalid):
    _msg_fmt = ("Invalid configuration: the key-encryption key %(path)s "
                "cannot be used: %(reason)s. Fix [key_service] kek_path in "
                "trusted-pools.conf and restart the conductor.")


class SecretUndecryptable(TrustedPoolsError):
    """A stored secret does not decrypt under the key-encryption key (a
    different KEK, or the row was altered): nothing is released."""

    _msg_fmt = ("Secret %(secret)s does not decrypt under key-encryption "
                "key %(kek_id)s: %(reason)s")


# --- vTPM migration (trusted_pools.conductor.migration, agent.migration) ----

class MigrationNotFound(NotFound):
    _msg_fmt = "vTPM migration %(migration)s not found"


class MigrationInProgress(Conflict):
    _msg_fmt = ("The vTPM of instance %(instance)s is already being "
                "migrated (migration %(migration)s)")


class MigrationRefused(NotAuthorized):
    """The conductor refused to move a vTPM: a host is not trusted, its
    verdict is stale, the destination is below the required level, or its
    transport key does not check out. Nothing was moved."""

    _msg_fmt = ("vTPM migration %(migration)s refused: %(reason)s")


class MigrationPayloadRejected(EvidenceError):
    """A destination refused a migration payload: it does not unwrap in
    its TPM or does not authenticate for this migration."""

    _msg_fmt = "Migration payload rejected: %(reason)s"


class MigrationStepRefused(Conflict):
    """An agent refused a migration step that contradicts its journal
    (a step for a migration it does not know, a repeated step with other
    arguments, an abort after commit)."""

    _msg_fmt = ("Migration %(migration)s on host %(host)s: %(reason)s")


class VTPMStale(VTPMError):
    """A vTPM copy older than the last committed migration of its instance
    (a restored backup, a source copy that was not erased): never run."""

    _msg_fmt = ("The vTPM of instance %(instance)s is a stale copy "
                "(epoch %(epoch)s, but epoch %(current)s was committed): "
                "it is not started")
