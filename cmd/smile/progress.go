package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api"
	"github.com/smile-vplm/smile/api/smilepb"
)

// progressBarWidth is the number of cells of the bar over an epoch's steps.
const progressBarWidth = 16

// progress shows a training job's records to a person. On a terminal the
// current line is redrawn in place (\r) and every finished epoch leaves a
// line behind; elsewhere (a log file, CI) it writes one line per stage and
// per finished epoch, so the output stays readable.
//
// A finished epoch's validation accuracy arrives after its last step, and
// the next epoch's records carry it, so epoch e's line is written when a
// record of a later epoch (or the job's final record) comes.
type progress struct {
	w   io.Writer
	tty bool

	last    *smilepb.TrainJob // the previous record
	drawn   int               // width of the line drawn in place (tty), 0: none
	printed uint32            // the last epoch whose line was written
	stage   string            // the last stage written (not tty)
	tenth   uint64            // a table job: the last tenth of its entries written (not tty)
}

func newProgress(w io.Writer) *progress { return &progress{w: w, tty: isTerminal(w)} }

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// update shows one record.
func (p *progress) update(j *smilepb.TrainJob) {
	if j.Kind == actors.JobKindTable {
		p.updateTable(j)
		return
	}
	if prev := p.last; prev != nil && prev.State == smilepb.JobState_JOB_TRAINING && prev.Epoch > p.printed && j.Epoch > prev.Epoch {
		p.line(epochLine(prev, true, j.ValAccuracy, j.BestValAccuracy))
		p.printed = prev.Epoch
	}
	p.last = j
	switch {
	case j.State == smilepb.JobState_JOB_TRAINING && (j.Epoch == 0 || j.Steps == 0):
		// Training, before its first step (or committing): the stage says.
		if p.tty {
			p.draw(stageText(j))
		}
	case j.State == smilepb.JobState_JOB_TRAINING:
		if p.tty {
			p.draw(liveLine(j))
		}
	case j.State == smilepb.JobState_JOB_QUEUED, j.State == smilepb.JobState_JOB_CACHING:
		s := stageText(j)
		if p.tty {
			p.draw(s)
		} else if j.State.String() != p.stage {
			// One line per stage: the counts in a stage's text change
			// with every record.
			p.line(s)
			p.stage = j.State.String()
		}
	}
}

// done writes what is left to write once the job ended (or the watch
// stopped): the last epoch's line, and clears a line drawn in place.
func (p *progress) done() {
	if j := p.last; j != nil && j.Kind == actors.JobKindTable {
		if j.Steps > 0 && j.Step > 0 && (p.tty || j.Step*10/j.Steps > p.tenth || (api.JobEnded(j) && p.tenth < 10)) {
			p.line(tableLine(j))
		}
	} else if j != nil && j.Epoch > p.printed && j.Step > 0 &&
		(j.State == smilepb.JobState_JOB_TRAINING || api.JobEnded(j)) {
		p.line(epochLine(j, j.State == smilepb.JobState_JOB_SUCCEEDED, j.ValAccuracy, j.BestValAccuracy))
		p.printed = j.Epoch
	}
	if p.drawn > 0 {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.drawn))
		p.drawn = 0
	}
}

// draw replaces the line drawn in place (tty only).
func (p *progress) draw(s string) {
	pad := max(p.drawn-len(s), 0)
	fmt.Fprintf(p.w, "\r%s%s", s, strings.Repeat(" ", pad))
	p.drawn = len(s)
	if pad > 0 {
		// The cursor stays at the end of the text, not of the padding.
		fmt.Fprintf(p.w, "\r%s", s)
	}
}

// line writes a line that stays (over the line drawn in place, if any).
func (p *progress) line(s string) {
	if p.tty && p.drawn > 0 {
		pad := max(p.drawn-len(s), 0)
		fmt.Fprintf(p.w, "\r%s%s\n", s, strings.Repeat(" ", pad))
		p.drawn = 0
		return
	}
	fmt.Fprintln(p.w, s)
}

// updateTable shows a record of a job that builds a PLOT table: its
// stage until entries are being computed, then a bar over the table's
// entries (those already stored count as done). Elsewhere than on a
// terminal, a line per stage and per tenth of the entries.
func (p *progress) updateTable(j *smilepb.TrainJob) {
	p.last = j
	if api.JobEnded(j) {
		return // done writes the last line
	}
	computing := j.State == smilepb.JobState_JOB_CACHING && j.Steps > 0 && (j.Step > 0 || j.ExamplesPerS > 0)
	switch {
	case p.tty && computing:
		p.draw(tableLine(j))
	case p.tty:
		p.draw(stageText(j))
	case computing:
		if t := j.Step * 10 / j.Steps; t > p.tenth {
			p.line(tableLine(j))
			p.tenth = t
		}
	case j.State.String() != p.stage:
		p.line(stageText(j))
		p.stage = j.State.String()
	}
}

// tableLine is the line of a table job computing its entries:
//
//	entries [######..........] 3072/8234 (8000 stored before) 1530 n-grams/s ETA 3s
func tableLine(j *smilepb.TrainJob) string {
	s := fmt.Sprintf("entries %s %d/%d", bar(j.Step, j.Steps), j.Step, j.Steps)
	if j.CachedExamples > 0 {
		s += fmt.Sprintf(" (%d stored before)", j.CachedExamples)
	}
	if api.JobEnded(j) || j.ExamplesPerS <= 0 {
		return s // no batch timed yet: no speed to tell
	}
	return fmt.Sprintf("%s %.0f n-grams/s ETA %s", s, j.ExamplesPerS, eta(j.EtaMs))
}

// tableStateName is a table job's state as people read it: its entries
// are computed while the record says CACHING.
func tableStateName(s smilepb.JobState) string {
	if s == smilepb.JobState_JOB_CACHING {
		return "computing"
	}
	return stateName(s)
}

// stageText is a record before training: queued, or caching the
// representations.
func stageText(j *smilepb.TrainJob) string {
	if j.Stage != "" {
		return j.Stage
	}
	return stateName(j.State)
}

// epochSteps is the steps of one epoch and how many of j's epoch are done
// (the record counts steps over the whole run).
func epochSteps(j *smilepb.TrainJob) (done, per uint64) {
	if j.Epochs == 0 || j.Steps == 0 {
		return 0, 0
	}
	per = j.Steps / uint64(j.Epochs)
	if per == 0 {
		return 0, 0
	}
	start := uint64(max(j.Epoch, 1)-1) * per
	if j.Step > start {
		done = min(j.Step-start, per)
	}
	return done, per
}

// bar is a fixed-width bar of done out of total.
func bar(done, total uint64) string {
	n := 0
	if total > 0 {
		n = int(done * progressBarWidth / total)
	}
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", progressBarWidth-n) + "]"
}

// liveLine is the line of a record in the middle of an epoch:
//
//	epoch 2/10 [######..........] 40/100 loss 0.5123 val 72.0% 412 ex/s ETA 1m05s
func liveLine(j *smilepb.TrainJob) string {
	done, per := epochSteps(j)
	speed := "- ex/s" // validating: no training steps to time
	if j.ExamplesPerS > 0 {
		speed = fmt.Sprintf("%.0f ex/s", j.ExamplesPerS)
	}
	return fmt.Sprintf("epoch %d/%d %s %d/%d loss %.4f val %s %s ETA %s", j.Epoch, j.Epochs, bar(done, per), done, per,
		j.Loss, percent(j.ValAccuracy), speed, eta(j.EtaMs))
}

// epochLine is an epoch's last line, with the validation accuracy it
// ended with; complete: the epoch ran all its steps (the watch may have
// skipped the record of its last step):
//
//	epoch 2/10 [################] 100/100 loss 0.4123 val 81.0% best 81.0%
func epochLine(j *smilepb.TrainJob, complete bool, val, best float64) string {
	done, per := epochSteps(j)
	if complete {
		done = per
	}
	return fmt.Sprintf("epoch %d/%d %s %d/%d loss %.4f val %s best %s", j.Epoch, j.Epochs, bar(done, per), done, per,
		j.Loss, percent(val), percent(best))
}

// percent is an accuracy in [0, 1] as a percentage; "-" before the first
// validation (negative).
func percent(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*v)
}

// eta formats milliseconds left: 45s, 3m05s, 1h02m.
func eta(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
}

// stateName is a job state as people read it.
func stateName(s smilepb.JobState) string {
	switch s {
	case smilepb.JobState_JOB_QUEUED:
		return "queued"
	case smilepb.JobState_JOB_CACHING:
		return "caching"
	case smilepb.JobState_JOB_TRAINING:
		return "training"
	case smilepb.JobState_JOB_SUCCEEDED:
		return "succeeded"
	case smilepb.JobState_JOB_FAILED:
		return "failed"
	case smilepb.JobState_JOB_CANCELED:
		return "canceled"
	}
	return "unknown"
}
