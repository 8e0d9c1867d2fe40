-- Every table, view, sequence and macro of the old file, rows as they are now: deleted rows are not copied.
COPY FROM DATABASE old TO fresh
