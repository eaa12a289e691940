-- Macros shared by every statement in sql/ (loaded once per DuckDB connection).

-- MIMIC timestamps are 'YYYY-MM-DD HH:MM:SS' without a time zone; NULL when unparseable
-- (row-level junk: the staging statements drop and count such rows).
CREATE OR REPLACE TEMP MACRO mimic_ts(s) AS
    try_strptime(s, ['%Y-%m-%d %H:%M:%S', '%Y-%m-%d %H:%M:%S.%f', '%Y-%m-%d %H:%M']);

-- MIMIC-CXR StudyTime (HHMMSS.f as a number, no leading zeros: 5012.0 is 00:50:12,
-- 80556.875 is 08:05:56.875) as an interval since midnight, parsed arithmetically:
--   hh = floor(t / 10000), mm = floor(t / 100) % 100, ss = t % 100 (fractions kept),
-- never with strptime('%H%M%S'), which misreads unpadded text ('10530' is 01:05:30).
-- Seconds are rounded to the microsecond to drop float noise (213014.53100000002).
-- NULL when not a number or out of range.
CREATE OR REPLACE TEMP MACRO cxr_clock(t) AS
    CASE
        WHEN t IS NULL OR NOT isfinite(t) OR t < 0 OR t >= 240000 THEN NULL
        WHEN floor(t / 100) % 100 >= 60 OR t - 100 * floor(t / 100) >= 60 THEN NULL
        ELSE to_hours(CAST(floor(t / 10000) AS BIGINT))
            + to_minutes(CAST(floor(t / 100) % 100 AS BIGINT))
            + to_microseconds(CAST(round((t - 100 * floor(t / 100)) * 1e6) AS BIGINT))
    END;

-- Split bucket of a subject: int(sha256(str(subject_id)).hexdigest()[:8], 16) % 100.
CREATE OR REPLACE TEMP MACRO split_bucket(subject_id) AS
    CAST(('0x' || substr(sha256(CAST(subject_id AS VARCHAR)), 1, 8)) AS UBIGINT) % 100;

-- `name` when a value is present in the raw file but did not parse: staging keeps such a
-- value as NULL and lists the column in _unparsed (counted per column and warned).
CREATE OR REPLACE TEMP MACRO unparsed(name, raw, parsed) AS
    CASE WHEN raw IS NOT NULL AND parsed IS NULL THEN name END;
