"""The MedicalRecordsService servicer: proto <-> domain, with the verified caller in. The chart's
rules live in domain.py, who may see what in policy.py (applied by gate.py), content in
chart_reads.py / chart_writes.py, access requests and grants in grants.py, the log in audit.py."""

from __future__ import annotations

from datetime import UTC, datetime

from clinic.medical_records.v1 import medical_records_service_pb2 as pb
from clinic.medical_records.v1 import medical_records_service_pb2_grpc as rpc
from clinic.medical_records.v1 import resources_pb2 as r
from clinic_platform import auth
from clinic_platform.convert import enum_name, from_timestamp, mask_paths, parse_enum, parse_uuid
from clinic_platform.errors import InvalidArgument
from clinic_platform.pagination import page_request
from medical_records import convert, domain, fhir, policy
from medical_records.audit import AuditLog
from medical_records.chart_reads import ChartReads
from medical_records.chart_writes import ChartWrites
from medical_records.grants import Grants
from medical_records.idempotent import Once, Retries


def _patient(request) -> str:
    return str(parse_uuid(request.patient_id, "patient_id"))


def _optional_id(value: str, field: str) -> str | None:
    return str(parse_uuid(value, field)) if value else None


class MedicalRecordsApi(rpc.MedicalRecordsServiceServicer):
    def __init__(
        self, reads: ChartReads, writes: ChartWrites, grants: Grants, log: AuditLog, retries: Retries
    ) -> None:
        self.reads = reads
        self.writes = writes
        self.grants = grants
        self.log = log
        self.retries = retries

    def _once(self, rpc: str, request, response_type, answer) -> Once:
        return Once(self.retries, rpc, request, response_type, answer)

    # -- the chart ------------------------------------------------------------------------------
    async def GetChart(self, request, context):
        chart = await self.reads.chart(auth.caller(), _patient(request), request.page_size or 200)
        return pb.GetChartResponse(chart=convert.chart(chart))

    async def UpdateChart(self, request, context):
        me = auth.caller()
        paths = mask_paths(request.update_mask, {"running_notes", "allergies"})
        allergies = convert.allergies_from(request.chart.allergies)
        chart = await self.writes.update_chart(
            me, _patient(request), paths, request.chart.running_notes, allergies
        )
        return pb.UpdateChartResponse(chart=convert.chart(chart))

    async def ListChartVersions(self, request, context):
        page = page_request(request.page_size, request.page_token, default=50, maximum=200)
        versions = await self.reads.versions(
            auth.caller(), _patient(request), convert.number_token(page), page.size + 1
        )
        versions, token = page.take(versions, lambda v: [v.version])
        return pb.ListChartVersionsResponse(
            versions=[convert.chart_version(v) for v in versions], next_page_token=token
        )

    async def ExportChart(self, request, context):
        chart = await self.reads.chart(auth.caller(), _patient(request), 1000, "ExportChart", whole=True)
        response = pb.ExportChartResponse()
        response.bundle.update(fhir.bundle(chart))
        return response

    # -- encounters and notes -------------------------------------------------------------------
    async def CreateEncounter(self, request, context):
        e = request.encounter
        return await self.writes.add_encounter(
            auth.caller(),
            _patient(request),
            _optional_id(e.appointment_id, "encounter.appointment_id"),
            from_timestamp(e.encounter_time, "encounter.encounter_time", required=False),
            e.chief_complaint.strip(),
            once=self._once(
                "CreateEncounter",
                request,
                pb.CreateEncounterResponse,
                lambda made: pb.CreateEncounterResponse(encounter=convert.encounter(made)),
            ),
        )

    async def ListEncounters(self, request, context):
        page = page_request(request.page_size, request.page_token, default=50, maximum=200)
        found = await self.reads.encounters(
            auth.caller(), _patient(request), convert.after_token(page), page.size + 1
        )
        found, token = page.take(found, convert.newest_key)
        return pb.ListEncountersResponse(
            encounters=[convert.encounter(e) for e in found], next_page_token=token
        )

    async def CreateNote(self, request, context):
        n = request.note
        soap = domain.Soap(n.subjective, n.objective, n.assessment, n.plan)
        return await self.writes.add_note(
            auth.caller(),
            _patient(request),
            _optional_id(n.encounter_id, "note.encounter_id"),
            soap,
            once=self._once(
                "CreateNote",
                request,
                pb.CreateNoteResponse,
                lambda made: pb.CreateNoteResponse(note=convert.note(made)),
            ),
        )

    async def UpdateNote(self, request, context):
        paths = mask_paths(request.update_mask, set(domain.SOAP))
        changes = {name: getattr(request.note, name) for name in paths}
        note = await self.writes.amend_note(
            auth.caller(), _patient(request), str(parse_uuid(request.note_id, "note_id")), changes
        )
        return pb.UpdateNoteResponse(note=convert.note(note))

    async def ListNoteRevisions(self, request, context):
        page = page_request(request.page_size, request.page_token, default=50, maximum=200)
        note_id = str(parse_uuid(request.note_id, "note_id"))
        found = await self.reads.revisions(
            auth.caller(), _patient(request), note_id, convert.number_token(page), page.size + 1
        )
        found, token = page.take(found, lambda v: [v.revision])
        return pb.ListNoteRevisionsResponse(
            revisions=[convert.revision(v) for v in found], next_page_token=token
        )

    # -- diagnoses, prescriptions, vitals -------------------------------------------------------
    async def CreateDiagnosis(self, request, context):
        d = request.diagnosis
        return await self.writes.add_diagnosis(
            auth.caller(),
            _patient(request),
            _optional_id(d.encounter_id, "diagnosis.encounter_id"),
            d.code,
            d.description,
            once=self._once(
                "CreateDiagnosis",
                request,
                pb.CreateDiagnosisResponse,
                lambda made: pb.CreateDiagnosisResponse(diagnosis=convert.diagnosis(made)),
            ),
        )

    async def UpdateDiagnosis(self, request, context):
        paths = mask_paths(request.update_mask, {"status", "description"})
        status = None
        if "status" in paths:
            if request.diagnosis.status == r.DIAGNOSIS_STATUS_UNSPECIFIED:
                raise InvalidArgument("diagnosis.status", "is required: ACTIVE, RESOLVED or ENTERED_IN_ERROR")
            status = enum_name(r.DiagnosisStatus, request.diagnosis.status)
        description = request.diagnosis.description.strip() if "description" in paths else None
        if description == "":
            raise InvalidArgument("diagnosis.description", "must not be empty")
        diagnosis = await self.writes.change_diagnosis(
            auth.caller(),
            _patient(request),
            str(parse_uuid(request.diagnosis_id, "diagnosis_id")),
            status,
            description,
        )
        return pb.UpdateDiagnosisResponse(diagnosis=convert.diagnosis(diagnosis))

    async def CreatePrescription(self, request, context):
        p = request.prescription
        fields = convert.prescription_fields(p)
        return await self.writes.add_prescription(
            auth.caller(),
            _patient(request),
            _optional_id(p.encounter_id, "prescription.encounter_id"),
            fields,
            p.duration_days,
            once=self._once(
                "CreatePrescription",
                request,
                pb.CreatePrescriptionResponse,
                lambda made: pb.CreatePrescriptionResponse(prescription=convert.prescription(made)),
            ),
        )

    async def UpdatePrescription(self, request, context):
        mask_paths(request.update_mask, {"status"})
        status = enum_name(r.PrescriptionStatus, request.prescription.status)
        prescription = await self.writes.change_prescription(
            auth.caller(),
            _patient(request),
            str(parse_uuid(request.prescription_id, "prescription_id")),
            status,
        )
        return pb.UpdatePrescriptionResponse(prescription=convert.prescription(prescription))

    async def CreateVitalSigns(self, request, context):
        v = request.vital_signs
        values = {name: getattr(v, name) for name in domain.VITALS if v.HasField(name)}
        return await self.writes.add_vitals(
            auth.caller(),
            _patient(request),
            _optional_id(v.encounter_id, "vital_signs.encounter_id"),
            from_timestamp(v.measure_time, "vital_signs.measure_time", required=False),
            values,
            once=self._once(
                "CreateVitalSigns",
                request,
                pb.CreateVitalSignsResponse,
                lambda made: pb.CreateVitalSignsResponse(vital_signs=convert.vitals(made)),
            ),
        )

    # -- access ---------------------------------------------------------------------------------
    async def CreateAccessRequest(self, request, context):
        reason = request.access_request.reason.strip()
        if not reason:
            raise InvalidArgument("access_request.reason", "is required: tell the patient why")
        return await self.grants.request(
            auth.caller(),
            _patient(request),
            reason,
            once=self._once(
                "CreateAccessRequest",
                request,
                pb.CreateAccessRequestResponse,
                lambda made: pb.CreateAccessRequestResponse(access_request=convert.access_request(made)),
            ),
        )

    async def ListAccessRequests(self, request, context):
        status = parse_enum(r.AccessRequestStatus, request.status, "status") if request.status else None
        page = page_request(
            request.page_size, request.page_token, {"status": status}, default=50, maximum=200
        )
        me = auth.caller()
        found = await self.grants.list_requests(
            me, _patient(request), status, convert.after_token(page), page.size + 1
        )
        found, token = page.take(found, convert.newest_key)
        return pb.ListAccessRequestsResponse(
            access_requests=[convert.access_request(policy.readable_request(me, a)) for a in found],
            next_page_token=token,
        )

    async def DenyAccessRequest(self, request, context):
        denied = await self.grants.deny(
            auth.caller(), _patient(request), str(parse_uuid(request.access_request_id, "access_request_id"))
        )
        return pb.DenyAccessRequestResponse(access_request=convert.access_request(denied))

    async def CreateAccessGrant(self, request, context):
        g = request.access_grant
        return await self.grants.grant(
            auth.caller(),
            _patient(request),
            str(parse_uuid(g.grantee_id, "access_grant.grantee_id")),
            _optional_id(g.access_request_id, "access_grant.access_request_id"),
            from_timestamp(g.expire_time, "access_grant.expire_time", required=False),
            once=self._once(
                "CreateAccessGrant",
                request,
                pb.CreateAccessGrantResponse,
                lambda made: pb.CreateAccessGrantResponse(
                    access_grant=convert.access_grant(made, datetime.now(UTC))
                ),
            ),
        )

    async def ListAccessGrants(self, request, context):
        page = page_request(request.page_size, request.page_token, default=50, maximum=200)
        me = auth.caller()
        found = await self.grants.list_grants(me, _patient(request), convert.after_token(page), page.size + 1)
        found, token = page.take(found, convert.newest_key)
        now = datetime.now(UTC)
        return pb.ListAccessGrantsResponse(
            access_grants=[convert.access_grant(policy.readable_grant(me, g), now) for g in found],
            next_page_token=token,
        )

    async def RevokeAccessGrant(self, request, context):
        me = auth.caller()
        revoked = await self.grants.revoke(
            me, _patient(request), str(parse_uuid(request.access_grant_id, "access_grant_id"))
        )
        readable = policy.readable_grant(me, revoked)
        return pb.RevokeAccessGrantResponse(access_grant=convert.access_grant(readable, datetime.now(UTC)))

    async def BreakGlass(self, request, context):
        justification = request.justification.strip()
        if len(justification) < 20:
            raise InvalidArgument(
                "justification", "must say in at least 20 characters why this is an emergency"
            )
        granted = await self.grants.break_glass(auth.caller(), _patient(request), justification)
        return pb.BreakGlassResponse(access_grant=convert.access_grant(granted, datetime.now(UTC)))

    async def ListAccessLogEntries(self, request, context):
        me = auth.caller()
        patient_id = None if request.patient_id == "-" else _patient(request)  # "-": every chart's
        actor_id = _optional_id(request.actor_id, "actor_id")
        page = page_request(
            request.page_size,
            request.page_token,
            {"patient": patient_id, "actor": actor_id},
            default=50,
            maximum=500,
        )
        found = await self.log.entries(me, patient_id, actor_id, convert.number_token(page), page.size + 1)
        found, token = page.take(found, lambda e: [e.sequence])
        return pb.ListAccessLogEntriesResponse(
            access_log_entries=[convert.log_entry(policy.readable_entry(me, e)) for e in found],
            next_page_token=token,
        )
