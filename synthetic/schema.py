"""Column names/order of every raw file (copied from MIMIC-IV 2.2 / Note / CXR-JPG)."""

from __future__ import annotations

PATIENTS = ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"]
ADMISSIONS = [
    "subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
    "admit_provider_id", "admission_location", "discharge_location", "insurance", "language",
    "marital_status", "race", "edregtime", "edouttime", "hospital_expire_flag",
]
LABEVENTS = [
    "labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id",
    "charttime", "storetime", "value", "valuenum", "valueuom", "ref_range_lower",
    "ref_range_upper", "flag", "priority", "comments",
]
D_LABITEMS = ["itemid", "label", "fluid", "category"]
ICUSTAYS = [
    "subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime", "los",
]
CHARTEVENTS = [
    "subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime", "itemid",
    "value", "valuenum", "valueuom", "warning",
]
D_ITEMS = [
    "itemid", "label", "abbreviation", "linksto", "category", "unitname", "param_type",
    "lownormalvalue", "highnormalvalue",
]
NOTES = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]
CXR_METADATA = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning",
]
CHEXPERT_LABELS = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion",
    "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
]
CHEXPERT = ["subject_id", "study_id", *CHEXPERT_LABELS]

#: relative path -> columns, for every file the generator writes
FILES: dict[str, list[str]] = {
    "hosp/patients.csv.gz": PATIENTS,
    "hosp/admissions.csv.gz": ADMISSIONS,
    "hosp/labevents.csv.gz": LABEVENTS,
    "hosp/d_labitems.csv.gz": D_LABITEMS,
    "icu/icustays.csv.gz": ICUSTAYS,
    "icu/chartevents.csv.gz": CHARTEVENTS,
    "icu/d_items.csv.gz": D_ITEMS,
    "note/discharge.csv.gz": NOTES,
    "note/radiology.csv.gz": NOTES,
    "cxr/mimic-cxr-2.0.0-metadata.csv.gz": CXR_METADATA,
    "cxr/mimic-cxr-2.0.0-chexpert.csv.gz": CHEXPERT,
}

# Dictionary rows (verbatim from the MIMIC-IV demo 2.2) for the items the generator charts.
D_ITEMS_ROWS: list[tuple[object, ...]] = [
    (220045, "Heart Rate", "HR", "chartevents", "Routine Vital Signs", "bpm", "Numeric", None, None),
    (220050, "Arterial Blood Pressure systolic", "ABPs", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", 90, 140),
    (220051, "Arterial Blood Pressure diastolic", "ABPd", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", 60, 90),
    (220052, "Arterial Blood Pressure mean", "ABPm", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", None, None),
    (220179, "Non Invasive Blood Pressure systolic", "NBPs", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", None, None),
    (220180, "Non Invasive Blood Pressure diastolic", "NBPd", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", None, None),
    (220181, "Non Invasive Blood Pressure mean", "NBPm", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", None, None),
    (220210, "Respiratory Rate", "RR", "chartevents", "Respiratory", "insp/min", "Numeric", None, None),
    (220277, "O2 saturation pulseoxymetry", "SpO2", "chartevents", "Respiratory", "%", "Numeric", None, None),
    (220621, "Glucose (serum)", "Glucose (serum)", "chartevents", "Labs", "None", "Numeric", None, None),
    (223761, "Temperature Fahrenheit", "Temperature F", "chartevents", "Routine Vital Signs", "°F", "Numeric", None, None),
    (223762, "Temperature Celsius", "Temperature C", "chartevents", "Routine Vital Signs", "°C", "Numeric", None, None),
    (224690, "Respiratory Rate (Total)", "Respiratory Rate (Total)", "chartevents", "Respiratory", "insp/min", "Numeric", None, 36),
    (225309, "ART BP Systolic", "ART BP Systolic", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", None, None),
    (225310, "ART BP Diastolic", "ART BP Diastolic", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", None, None),
    (225312, "ART BP Mean", "ART BP Mean", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", None, None),
    (225664, "Glucose finger stick (range 70-100)", "Glucose FS (range 70 -100)", "chartevents", "Labs", "None", "Numeric", None, None),
    (226537, "Glucose (whole blood)", "Glucose (whole blood)", "chartevents", "Labs", "None", "Numeric", None, None),
]
D_LABITEMS_ROWS: list[tuple[object, ...]] = [
    (50813, "Lactate", "Blood", "Blood Gas"),
    (50868, "Anion Gap", "Blood", "Chemistry"),
    (50882, "Bicarbonate", "Blood", "Chemistry"),
    (50885, "Bilirubin, Total", "Blood", "Chemistry"),
    (50893, "Calcium, Total", "Blood", "Chemistry"),
    (50902, "Chloride", "Blood", "Chemistry"),
    (50912, "Creatinine", "Blood", "Chemistry"),
    (50931, "Glucose", "Blood", "Chemistry"),
    (50971, "Potassium", "Blood", "Chemistry"),
    (50983, "Sodium", "Blood", "Chemistry"),
    (51006, "Urea Nitrogen", "Blood", "Chemistry"),
    (51221, "Hematocrit", "Blood", "Hematology"),
    (51222, "Hemoglobin", "Blood", "Hematology"),
    (51237, "INR(PT)", "Blood", "Hematology"),
    (51265, "Platelet Count", "Blood", "Hematology"),
    (51301, "White Blood Cells", "Blood", "Hematology"),
]
