      *================================================================
      * ASKAI - one batch step asks a promptfs model directory one
      * question and keeps the answer in a file of its own.
      *
      *   cobc -x examples/askai.cbl -o askai
      *   ./askai MODEL-DIR NAME QUESTION-FILE ANSWER-FILE [SECONDS]
      *
      * It copies QUESTION-FILE, line by line, to MODEL-DIR/NAME.prompt
      * (LINE SEQUENTIAL; the CLOSE submits the job), waits for the job
      * to end (at most SECONDS, default 600), then copies
      * NAME.response to ANSWER-FILE.
      *
      * How it knows the job's end without trusting a file status:
      * libcob reports a read that fails (EIO, a failed or cut answer)
      * as status 10, the same as the end of the file, and reports no
      * error of the write its buffer holds until CLOSE, nor of the
      * CLOSE (where promptfs refuses a prompt it sees whole). So the
      * program never reads NAME.response before the job is over, and
      * tells a failed job from a complete one by the two promptfs
      * rules:
      *   NAME.error exists exactly when the job failed or its prompt
      *   was refused;
      *   NAME.meta's "status" is "done" once the answer is complete,
      *   "failed" once it has failed.
      *
      * RETURN-CODE: 0 answered (ANSWER-FILE written); 1 the job failed
      * or the prompt was refused (NAME.error copied to stderr, no
      * ANSWER-FILE written); 2 wrong arguments, a file that could not
      * be used, or no end within SECONDS (the job may still finish).
      *
      * Lines are at most 32767 bytes: a longer one is cut (libcob
      * 3.1 gives no status for it). Trailing spaces of a line are not
      * kept (LINE SEQUENTIAL).
      *================================================================
       IDENTIFICATION DIVISION.
       PROGRAM-ID. ASKAI.

       ENVIRONMENT DIVISION.
       INPUT-OUTPUT SECTION.
       FILE-CONTROL.
           SELECT QUESTION-FILE ASSIGN TO WS-QUESTION-PATH
               ORGANIZATION IS LINE SEQUENTIAL
               FILE STATUS IS WS-QUESTION-STATUS.
           SELECT PROMPT-FILE ASSIGN TO WS-PROMPT-PATH
               ORGANIZATION IS LINE SEQUENTIAL
               FILE STATUS IS WS-PROMPT-STATUS.
           SELECT META-FILE ASSIGN TO WS-META-PATH
               ORGANIZATION IS LINE SEQUENTIAL
               FILE STATUS IS WS-META-STATUS.
           SELECT ERROR-FILE ASSIGN TO WS-ERROR-PATH
               ORGANIZATION IS LINE SEQUENTIAL
               FILE STATUS IS WS-ERROR-STATUS.
           SELECT RESPONSE-FILE ASSIGN TO WS-RESPONSE-PATH
               ORGANIZATION IS LINE SEQUENTIAL
               FILE STATUS IS WS-RESPONSE-STATUS.
           SELECT ANSWER-FILE ASSIGN TO WS-ANSWER-PATH
               ORGANIZATION IS LINE SEQUENTIAL
               FILE STATUS IS WS-ANSWER-STATUS.

       DATA DIVISION.
       FILE SECTION.
       FD  QUESTION-FILE
           RECORD IS VARYING IN SIZE FROM 1 TO 32767 CHARACTERS
               DEPENDING ON WS-LINE-LENGTH.
       01  QUESTION-RECORD             PIC X(32767).
       FD  PROMPT-FILE
           RECORD IS VARYING IN SIZE FROM 1 TO 32767 CHARACTERS
               DEPENDING ON WS-LINE-LENGTH.
       01  PROMPT-RECORD               PIC X(32767).
       FD  META-FILE
           RECORD IS VARYING IN SIZE FROM 1 TO 32767 CHARACTERS
               DEPENDING ON WS-LINE-LENGTH.
       01  META-RECORD                 PIC X(32767).
       FD  ERROR-FILE
           RECORD IS VARYING IN SIZE FROM 1 TO 32767 CHARACTERS
               DEPENDING ON WS-LINE-LENGTH.
       01  ERROR-RECORD                PIC X(32767).
       FD  RESPONSE-FILE
           RECORD IS VARYING IN SIZE FROM 1 TO 32767 CHARACTERS
               DEPENDING ON WS-LINE-LENGTH.
       01  RESPONSE-RECORD             PIC X(32767).
       FD  ANSWER-FILE
           RECORD IS VARYING IN SIZE FROM 1 TO 32767 CHARACTERS
               DEPENDING ON WS-LINE-LENGTH.
       01  ANSWER-RECORD               PIC X(32767).

       WORKING-STORAGE SECTION.
       01  WS-ARGUMENT-COUNT           PIC 9(4).
       01  WS-ARGUMENT                 PIC X(4096).
       01  WS-MODEL-DIR                PIC X(4096).
       01  WS-JOB-NAME                 PIC X(255).
       01  WS-QUESTION-PATH            PIC X(4096).
       01  WS-ANSWER-PATH              PIC X(4096).
      * MODEL-DIR/NAME, and the paths of the job's four files
       01  WS-JOB-PATH                 PIC X(4352) VALUE SPACES.
       01  WS-PROMPT-PATH              PIC X(4352).
       01  WS-META-PATH                PIC X(4352).
       01  WS-ERROR-PATH               PIC X(4352).
       01  WS-RESPONSE-PATH            PIC X(4352).

       01  WS-QUESTION-STATUS          PIC XX.
       01  WS-PROMPT-STATUS            PIC XX.
       01  WS-META-STATUS              PIC XX.
       01  WS-ERROR-STATUS             PIC XX.
       01  WS-RESPONSE-STATUS          PIC XX.
       01  WS-ANSWER-STATUS            PIC XX.
      * the first status of PROMPT-FILE that was not "00"
       01  WS-REFUSED-STATUS           PIC XX VALUE "00".

       01  WS-LINE-LENGTH              PIC 9(9) COMP.
       01  WS-LINE                     PIC X(32767).
       01  WS-LINES                    PIC 9(9) VALUE 0.
       01  WS-LINES-SHOWN              PIC Z(8)9.

      * polled every 0.2 s: 5 polls a second
       01  WS-POLL-NANOSECONDS         PIC 9(18) COMP VALUE 200000000.
       01  WS-SECONDS                  PIC 9(9) VALUE 600.
       01  WS-POLLS-LEFT               PIC 9(11).
       01  WS-TALLY                    PIC 9(4) COMP.

       01  WS-END-OF-FILE              PIC X VALUE "N".
           88  AT-END-OF-FILE          VALUE "Y".
       01  WS-JOB-STATE                PIC X VALUE "W".
           88  JOB-WAITING             VALUE "W".
           88  JOB-DONE                VALUE "D".
           88  JOB-FAILED              VALUE "F".

       PROCEDURE DIVISION.
       MAIN-PARAGRAPH.
           PERFORM READ-ARGUMENTS
           PERFORM WRITE-PROMPT
           PERFORM WAIT-FOR-END
           IF JOB-DONE
               PERFORM COPY-ANSWER
               MOVE 0 TO RETURN-CODE
               STOP RUN
           END-IF
      *    a refused prompt has no NAME.meta: it never was a job
           OPEN INPUT META-FILE
           IF WS-META-STATUS = "00"
               CLOSE META-FILE
               DISPLAY "askai: " FUNCTION TRIM(WS-JOB-NAME TRAILING)
                   ".prompt failed; "
                   FUNCTION TRIM(WS-ERROR-PATH TRAILING) " says:"
                   UPON SYSERR
           ELSE
               DISPLAY "askai: " FUNCTION TRIM(WS-PROMPT-PATH TRAILING)
                   " was refused; "
                   FUNCTION TRIM(WS-ERROR-PATH TRAILING) " says:"
                   UPON SYSERR
           END-IF
           PERFORM SHOW-ERROR-FILE
           MOVE 1 TO RETURN-CODE
           STOP RUN.

       READ-ARGUMENTS.
           ACCEPT WS-ARGUMENT-COUNT FROM ARGUMENT-NUMBER
           IF WS-ARGUMENT-COUNT < 4 OR WS-ARGUMENT-COUNT > 5
               DISPLAY "usage: askai MODEL-DIR NAME QUESTION-FILE "
                   "ANSWER-FILE [SECONDS]" UPON SYSERR
               MOVE 2 TO RETURN-CODE
               STOP RUN
           END-IF
           ACCEPT WS-MODEL-DIR FROM ARGUMENT-VALUE
           ACCEPT WS-JOB-NAME FROM ARGUMENT-VALUE
           ACCEPT WS-QUESTION-PATH FROM ARGUMENT-VALUE
           ACCEPT WS-ANSWER-PATH FROM ARGUMENT-VALUE
           IF WS-ARGUMENT-COUNT = 5
               ACCEPT WS-ARGUMENT FROM ARGUMENT-VALUE
               IF FUNCTION TEST-NUMVAL(WS-ARGUMENT) NOT = 0
                   DISPLAY "askai: SECONDS must be a number, not "
                       FUNCTION TRIM(WS-ARGUMENT TRAILING) UPON SYSERR
                   MOVE 2 TO RETURN-CODE
                   STOP RUN
               END-IF
               COMPUTE WS-SECONDS = FUNCTION NUMVAL(WS-ARGUMENT)
           END-IF
           COMPUTE WS-POLLS-LEFT = WS-SECONDS * 5
           STRING FUNCTION TRIM(WS-MODEL-DIR TRAILING) "/"
                  FUNCTION TRIM(WS-JOB-NAME TRAILING)
                  DELIMITED BY SIZE INTO WS-JOB-PATH
           MOVE SPACES TO WS-PROMPT-PATH WS-META-PATH WS-ERROR-PATH
                          WS-RESPONSE-PATH
           STRING FUNCTION TRIM(WS-JOB-PATH TRAILING) ".prompt"
                  DELIMITED BY SIZE INTO WS-PROMPT-PATH
           STRING FUNCTION TRIM(WS-JOB-PATH TRAILING) ".meta"
                  DELIMITED BY SIZE INTO WS-META-PATH
           STRING FUNCTION TRIM(WS-JOB-PATH TRAILING) ".error"
                  DELIMITED BY SIZE INTO WS-ERROR-PATH
           STRING FUNCTION TRIM(WS-JOB-PATH TRAILING) ".response"
                  DELIMITED BY SIZE INTO WS-RESPONSE-PATH.

      * The question, line by line, into NAME.prompt. promptfs refuses
      * a prompt as early as it can: at OPEN (status 37: a policy
      * excludes this model, a budget is spent), at a WRITE that
      * libcob flushes (30: too large, not UTF-8, over a cost cap), or
      * at the CLOSE, which libcob does not report. A refused prompt is
      * never sent, and its reason is in NAME.error either way.
       WRITE-PROMPT.
           OPEN INPUT QUESTION-FILE
           IF WS-QUESTION-STATUS NOT = "00"
               DISPLAY "askai: cannot read "
                   FUNCTION TRIM(WS-QUESTION-PATH TRAILING)
                   " (file status " WS-QUESTION-STATUS ")" UPON SYSERR
               MOVE 2 TO RETURN-CODE
               STOP RUN
           END-IF
           OPEN OUTPUT PROMPT-FILE
           IF WS-PROMPT-STATUS NOT = "00"
               MOVE WS-PROMPT-STATUS TO WS-REFUSED-STATUS
               CLOSE QUESTION-FILE
               PERFORM PROMPT-REFUSED
           END-IF
           PERFORM UNTIL AT-END-OF-FILE
               READ QUESTION-FILE
                   AT END
                       SET AT-END-OF-FILE TO TRUE
                   NOT AT END
                       ADD 1 TO WS-LINES
                       WRITE PROMPT-RECORD FROM QUESTION-RECORD
                       IF WS-PROMPT-STATUS NOT = "00"
                           MOVE WS-PROMPT-STATUS TO WS-REFUSED-STATUS
                           SET AT-END-OF-FILE TO TRUE
                       END-IF
               END-READ
           END-PERFORM
           CLOSE QUESTION-FILE
           CLOSE PROMPT-FILE
           IF WS-REFUSED-STATUS = "00"
               MOVE WS-PROMPT-STATUS TO WS-REFUSED-STATUS
           END-IF
           IF WS-REFUSED-STATUS NOT = "00"
               PERFORM PROMPT-REFUSED
           END-IF
           IF WS-LINES = 0
      *        an empty prompt is not a job: nothing would ever end
               DISPLAY "askai: "
                   FUNCTION TRIM(WS-QUESTION-PATH TRAILING)
                   " is empty" UPON SYSERR
               MOVE 2 TO RETURN-CODE
               STOP RUN
           END-IF.

       PROMPT-REFUSED.
           DISPLAY "askai: " FUNCTION TRIM(WS-PROMPT-PATH TRAILING)
               " was refused (file status " WS-REFUSED-STATUS "); "
               FUNCTION TRIM(WS-ERROR-PATH TRAILING) " says:"
               UPON SYSERR
           PERFORM SHOW-ERROR-FILE
           MOVE 1 TO RETURN-CODE
           STOP RUN.

      * Polls until NAME.error appears (failed or refused) or NAME.meta
      * says "done" or "failed". .error is written before .meta says
      * "failed", so a failed job's reason is there to be shown.
       WAIT-FOR-END.
           PERFORM CHECK-JOB
           PERFORM UNTIL NOT JOB-WAITING OR WS-POLLS-LEFT = 0
               CALL "CBL_GC_NANOSLEEP" USING WS-POLL-NANOSECONDS
               SUBTRACT 1 FROM WS-POLLS-LEFT
               PERFORM CHECK-JOB
           END-PERFORM
           IF JOB-WAITING
               DISPLAY "askai: " FUNCTION TRIM(WS-JOB-NAME TRAILING)
                   ".prompt has not ended after " WS-SECONDS
                   " seconds; it goes on, see "
                   FUNCTION TRIM(WS-META-PATH TRAILING) UPON SYSERR
               MOVE 2 TO RETURN-CODE
               STOP RUN
           END-IF.

       CHECK-JOB.
           OPEN INPUT ERROR-FILE
           IF WS-ERROR-STATUS = "00"
               CLOSE ERROR-FILE
               SET JOB-FAILED TO TRUE
           ELSE
               OPEN INPUT META-FILE
               IF WS-META-STATUS = "00"
                   MOVE SPACES TO WS-LINE
                   READ META-FILE INTO WS-LINE
                   CLOSE META-FILE
                   MOVE 0 TO WS-TALLY
                   INSPECT WS-LINE TALLYING WS-TALLY
                       FOR ALL '"status":"done"'
                   IF WS-TALLY > 0
                       SET JOB-DONE TO TRUE
                   END-IF
                   INSPECT WS-LINE TALLYING WS-TALLY
                       FOR ALL '"status":"failed"'
                           ALL '"status":"cancelled"'
                   IF WS-TALLY > 0 AND NOT JOB-DONE
                       SET JOB-FAILED TO TRUE
                   END-IF
               END-IF
           END-IF.

      * The job is done: its answer is complete, so the end of the file
      * (status 10) really is the end of the answer.
       COPY-ANSWER.
           OPEN INPUT RESPONSE-FILE
           IF WS-RESPONSE-STATUS NOT = "00"
               DISPLAY "askai: cannot read "
                   FUNCTION TRIM(WS-RESPONSE-PATH TRAILING)
                   " (file status " WS-RESPONSE-STATUS ")" UPON SYSERR
               MOVE 2 TO RETURN-CODE
               STOP RUN
           END-IF
           OPEN OUTPUT ANSWER-FILE
           IF WS-ANSWER-STATUS NOT = "00"
               DISPLAY "askai: cannot write "
                   FUNCTION TRIM(WS-ANSWER-PATH TRAILING)
                   " (file status " WS-ANSWER-STATUS ")" UPON SYSERR
               MOVE 2 TO RETURN-CODE
               STOP RUN
           END-IF
           MOVE 0 TO WS-LINES
           MOVE "N" TO WS-END-OF-FILE
           PERFORM UNTIL AT-END-OF-FILE
               READ RESPONSE-FILE
                   AT END
                       SET AT-END-OF-FILE TO TRUE
                   NOT AT END
                       ADD 1 TO WS-LINES
                       WRITE ANSWER-RECORD FROM RESPONSE-RECORD
               END-READ
           END-PERFORM
           CLOSE RESPONSE-FILE
           CLOSE ANSWER-FILE
           IF WS-ANSWER-STATUS NOT = "00"
               DISPLAY "askai: cannot write "
                   FUNCTION TRIM(WS-ANSWER-PATH TRAILING)
                   " (file status " WS-ANSWER-STATUS ")" UPON SYSERR
               MOVE 2 TO RETURN-CODE
               STOP RUN
           END-IF
           MOVE WS-LINES TO WS-LINES-SHOWN
           DISPLAY "askai: " FUNCTION TRIM(WS-JOB-NAME TRAILING)
               ": done, " FUNCTION TRIM(WS-LINES-SHOWN LEADING)
               " lines in " FUNCTION TRIM(WS-ANSWER-PATH TRAILING).

       SHOW-ERROR-FILE.
           OPEN INPUT ERROR-FILE
           IF WS-ERROR-STATUS NOT = "00"
               DISPLAY "  (no " FUNCTION TRIM(WS-ERROR-PATH TRAILING)
                   ")" UPON SYSERR
           ELSE
               MOVE "N" TO WS-END-OF-FILE
               PERFORM UNTIL AT-END-OF-FILE
                   READ ERROR-FILE INTO WS-LINE
                       AT END
                           SET AT-END-OF-FILE TO TRUE
                       NOT AT END
                           DISPLAY "  " FUNCTION TRIM(WS-LINE TRAILING)
                               UPON SYSERR
                   END-READ
               END-PERFORM
               CLOSE ERROR-FILE
           END-IF.
