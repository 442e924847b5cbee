"""A chart as a FHIR R4 Bundle (type "collection"): the Patient as a reference, and Encounter,
Condition, MedicationRequest, AllergyIntolerance and Observation resources (vital signs coded in
LOINC with UCUM units). Plain dicts; tests validate them with `fhir.resources`."""

from __future__ import annotations

from datetime import UTC, datetime

from medical_records import domain

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ENCOUNTER_CLASS = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

# measurement -> (LOINC code, display, UCUM unit)
VITAL_CODES = {
    "systolic_mmhg": ("8480-6", "Systolic blood pressure", "mm[Hg]"),
    "diastolic_mmhg": ("8462-4", "Diastolic blood pressure", "mm[Hg]"),
    "heart_rate_bpm": ("8867-4", "Heart rate", "/min"),
    "respiratory_rate": ("9279-1", "Respiratory rate", "/min"),
    "temperature_celsius": ("8310-5", "Body temperature", "Cel"),
    "oxygen_saturation_percent": ("2708-6", "Oxygen saturation in Arterial blood", "%"),
    "weight_kg": ("29463-7", "Body weight", "kg"),
    "height_cm": ("8302-2", "Body height", "cm"),
}
PRESCRIPTION_STATUS = {"ACTIVE": "active", "COMPLETED": "completed", "DISCONTINUED": "stopped"}
DIAGNOSIS_STATUS = {"ACTIVE": "active", "RESOLVED": "resolved", "ENTERED_IN_ERROR": "inactive"}
SEVERITY = {"MILD": "mild", "MODERATE": "moderate", "SEVERE": "severe"}


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _entry(resource: dict) -> dict:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}


def bundle(chart: domain.Chart) -> dict:
    patient = {"reference": f"Patient/{chart.patient_id}"}
    entries = [_entry(_encounter(e, patient)) for e in chart.encounters]
    entries += [_entry(_condition(d, patient)) for d in chart.diagnoses]
    entries += [_entry(_medication(p, patient)) for p in chart.prescriptions]
    if chart.version:
        entries += [
            _entry(_allergy(a, patient, f"{chart.patient_id[:24]}{i:012x}"))
            for i, a in enumerate(chart.version.allergies)
        ]
    for v in chart.vital_signs:
        entries += [_entry(o) for o in _observations(v, patient)]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _when(datetime.now(UTC)),
        "entry": entries,
    }


def _encounter(e: domain.Encounter, patient: dict) -> dict:
    resource = {
        "resourceType": "Encounter",
        "id": e.id,
        "status": "finished",
        "class": {"system": ENCOUNTER_CLASS, "code": "AMB", "display": "ambulatory"},
        "subject": patient,
        "participant": [{"individual": {"reference": f"Practitioner/{e.clinician_id}"}}],
        "period": {"start": _when(e.encounter_time)},
    }
    if e.appointment_id:
        resource["appointment"] = [{"reference": f"Appointment/{e.appointment_id}"}]
    if e.chief_complaint:
        resource["reasonCode"] = [{"text": e.chief_complaint}]
    return resource


def _condition(d: domain.Diagnosis, patient: dict) -> dict:
    resource = {
        "resourceType": "Condition",
        "id": d.id,
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": DIAGNOSIS_STATUS[d.status]}]},
        "verificationStatus": {
            "coding": [
                {
                    "system": VERIFICATION,
                    "code": "entered-in-error" if d.status == "ENTERED_IN_ERROR" else "confirmed",
                }
            ]
        },
        "code": {
            "coding": [{"system": ICD10, "code": d.code, "display": d.code_title}],
            "text": d.description,
        },
        "subject": patient,
        "recordedDate": _when(d.create_time),
        "recorder": {"reference": f"Practitioner/{d.diagnosed_by}"},
    }
    if d.encounter_id:
        resource["encounter"] = {"reference": f"Encounter/{d.encounter_id}"}
    return resource


def _medication(p: domain.Prescription, patient: dict) -> dict:
    text = " ".join(part for part in (p.dose, p.route, p.frequency) if part)
    dosage = {"text": text}
    if p.route:
        dosage["route"] = {"text": p.route}
    if p.duration_days:
        dosage["timing"] = {
            "repeat": {"boundsDuration": {"value": p.duration_days, "unit": "d", "system": UCUM, "code": "d"}}
        }
    resource = {
        "resourceType": "MedicationRequest",
        "id": p.id,
        "status": PRESCRIPTION_STATUS[p.status],
        "intent": "order",
        "medicationCodeableConcept": {"text": f"{p.drug} {p.strength}".strip()},
        "subject": patient,
        "authoredOn": _when(p.create_time),
        "requester": {"reference": f"Practitioner/{p.prescriber_id}"},
        "dosageInstruction": [dosage],
    }
    if p.encounter_id:
        resource["encounter"] = {"reference": f"Encounter/{p.encounter_id}"}
    return resource


def _allergy(a: domain.Allergy, patient: dict, resource_id: str) -> dict:
    resource = {
        "resourceType": "AllergyIntolerance",
        "id": resource_id,
        "code": {"text": a.substance},
        "patient": patient,
    }
    if a.reaction or a.severity in SEVERITY:
        reaction = {"manifestation": [{"text": a.reaction or "unspecified"}]}
        if a.severity in SEVERITY:
            reaction["severity"] = SEVERITY[a.severity]
        resource["reaction"] = [reaction]
    return resource


def _observations(v: domain.VitalSigns, patient: dict) -> list[dict]:
    found = []
    for index, (name, value) in enumerate(sorted(v.values.items())):
        code, display, unit = VITAL_CODES[name]
        resource = {
            "resourceType": "Observation",
            "id": f"{v.id[:24]}{index:012x}",
            "status": "final",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs"}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            "subject": patient,
            "effectiveDateTime": _when(v.measure_time),
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
            "performer": [{"reference": f"Practitioner/{v.recorded_by}"}],
        }
        if v.encounter_id:
            resource["encounter"] = {"reference": f"Encounter/{v.encounter_id}"}
        found.append(resource)
    return found
