// Command quickstart calls calgate from Go the way an internal service does:
// it connects a user (BuildAuthorizeUrl, the user's consent, ExchangeCode),
// lists their calendars, writes and deletes an event, shows what a bad
// request's status carries, and follows WatchChanges, resuming from a cursor.
//
// It runs against a calgate sandbox with [callbacks] configured, whose
// embedded fake Cronofy approves consent at once and offers controls that play
// the user:
//
//	cargo run --release -- sandbox --config examples/calgate.toml
//	cd clients/go && go generate ./... && go run ./cmd/quickstart
//
// CALGATE_ADDR (default localhost:50051) and CALGATE_API_KEY (default
// demo-api-key) override. It exits non-zero on any unexpected status.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	calgatev1 "calgate.local/clients/go/gen/calgate/v1"
)

const (
	redirectURI = "http://localhost:3000/cronofy/callback"
	userRef     = "go-quickstart"
	eventID     = "go-quickstart-1"
	// Every unary call gets this deadline: calgate's own budget to Cronofy is
	// shorter, so a slow Cronofy surfaces as DEADLINE_EXCEEDED or UNAVAILABLE
	// from calgate, not as a hung caller.
	callTimeout = 10 * time.Second
)

// apiKey is per-RPC credentials: the tenant's API key as a bearer token on
// every call made through the connection.
type apiKey string

func (k apiKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

// RequireTransportSecurity is false only because the sandbox listens on
// plain-text loopback; in a cluster, dial with TLS credentials and return true.
func (apiKey) RequireTransportSecurity() bool { return false }

func main() {
	log.SetFlags(0)
	if err := run(); err != nil {
		log.Fatalf("quickstart failed: %v", err)
	}
}

func run() error {
	addr := env("CALGATE_ADDR", "localhost:50051")
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(apiKey(env("CALGATE_API_KEY", "demo-api-key"))),
	)
	if err != nil {
		return fmt.Errorf("dialling %s: %w", addr, err)
	}
	defer conn.Close()
	client := calgatev1.NewCalendarWriteServiceClient(conn)

	// The stream outlives the unary calls: its own, longer deadline.
	watchCtx, stopWatching := context.WithTimeout(context.Background(), 60*time.Second)
	defer stopWatching()
	// Only changes recorded from now on (after = "").
	stream, err := client.WatchChanges(watchCtx, &calgatev1.WatchChangesRequest{})
	if err != nil {
		return fmt.Errorf("WatchChanges: %w", err)
	}

	grant, fakeHost, err := connect(client)
	if err != nil {
		return err
	}
	fmt.Printf("connected %s (%s)\n", grant.GetSub(), grant.GetStatus())
	if _, err := nextChange(stream); err != nil {
		return err
	}

	calendarID, err := writableCalendar(client)
	if err != nil {
		return err
	}
	if err := upsertAndDelete(client, calendarID); err != nil {
		return err
	}
	if err := showBadRequest(client, calendarID); err != nil {
		return err
	}
	return followChanges(client, stream, grant.GetSub(), calendarID, fakeHost)
}

// connect plays a user connecting their calendar: calgate builds the consent
// URL, the user's browser follows it and comes back to the redirect URI with
// a code, and ExchangeCode turns the code into a grant. expected_user_ref is
// the user of the browser session the redirect reached (CSRF protection).
func connect(client calgatev1.CalendarWriteServiceClient) (*calgatev1.Grant, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	built, err := client.BuildAuthorizeUrl(ctx, &calgatev1.BuildAuthorizeUrlRequest{
		RedirectUri: redirectURI,
		UserRef:     proto.String(userRef),
	})
	if err != nil {
		return nil, "", fmt.Errorf("BuildAuthorizeUrl: %w", err)
	}
	code, state, err := consent(ctx, built.GetUrl())
	if err != nil {
		return nil, "", err
	}
	exchanged, err := client.ExchangeCode(ctx, &calgatev1.ExchangeCodeRequest{
		Code:            code,
		RedirectUri:     redirectURI,
		State:           state,
		ExpectedUserRef: proto.String(userRef),
	})
	if err != nil {
		return nil, "", fmt.Errorf("ExchangeCode: %w", err)
	}
	authorize, err := url.Parse(built.GetUrl())
	if err != nil {
		return nil, "", err
	}
	return exchanged.GetGrant(), authorize.Scheme + "://" + authorize.Host, nil
}

// consent plays the user's browser: it opens the consent URL (the sandbox's
// fake approves at once) and reads code and state from the redirect.
func consent(ctx context.Context, consentURL string) (code, state string, err error) {
	browser := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, consentURL, nil)
	if err != nil {
		return "", "", err
	}
	response, err := browser.Do(request)
	if err != nil {
		return "", "", fmt.Errorf("opening the consent URL: %w", err)
	}
	defer response.Body.Close()
	location, err := response.Location()
	if err != nil {
		return "", "", fmt.Errorf("the consent page did not redirect (%s): %w", response.Status, err)
	}
	query := location.Query()
	return query.Get("code"), query.Get("state"), nil
}

func writableCalendar(client calgatev1.CalendarWriteServiceClient) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	listed, err := client.ListCalendars(ctx, &calgatev1.ListCalendarsRequest{
		User: &calgatev1.ListCalendarsRequest_UserRef{UserRef: userRef},
	})
	if err != nil {
		return "", fmt.Errorf("ListCalendars: %w", err)
	}
	for _, calendar := range listed.GetCalendars() {
		if !calendar.GetReadonly() {
			fmt.Printf("calendar %s (%s)\n", calendar.GetCalendarId(), calendar.GetCalendarName())
			return calendar.GetCalendarId(), nil
		}
	}
	return "", errors.New("the user has no calendar calgate may write to")
}

func event(summary string) *calgatev1.Event {
	return &calgatev1.Event{
		EventId: eventID,
		Summary: summary,
		Start:   &calgatev1.EventTime{Value: &calgatev1.EventTime_Time{Time: timestamppb.New(time.Unix(1_800_000_000, 0))}},
		End:     &calgatev1.EventTime{Value: &calgatev1.EventTime_Time{Time: timestamppb.New(time.Unix(1_800_001_800, 0))}},
	}
}

// upsertRequest writes the quickstart's event, titled summary, for its user.
func upsertRequest(calendarID, summary string) *calgatev1.UpsertEventRequest {
	return &calgatev1.UpsertEventRequest{
		User:       &calgatev1.UpsertEventRequest_UserRef{UserRef: userRef},
		CalendarId: calendarID,
		Event:      event(summary),
	}
}

func upsertAndDelete(client calgatev1.CalendarWriteServiceClient, calendarID string) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	written, err := client.UpsertEvent(ctx, upsertRequest(calendarID, "Written by clients/go/cmd/quickstart"))
	if err != nil {
		return fmt.Errorf("UpsertEvent: %w", err)
	}
	// DELIVERY_EMAIL_INVITE when the user chose Free/Busy or No-Access mode at consent.
	fmt.Printf("upserted %s (%s)\n", eventID, written.GetDelivery())
	if _, err := client.DeleteEvent(ctx, &calgatev1.DeleteEventRequest{
		User:       &calgatev1.DeleteEventRequest_UserRef{UserRef: userRef},
		CalendarId: calendarID,
		EventId:    eventID,
	}); err != nil {
		return fmt.Errorf("DeleteEvent: %w", err)
	}
	fmt.Printf("deleted %s\n", eventID)
	return nil
}

// showBadRequest sends an event without its required summary and prints what
// the status carries: the ErrorInfo reason to branch on, and a BadRequest
// naming each field that was wrong.
func showBadRequest(client calgatev1.CalendarWriteServiceClient, calendarID string) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := client.UpsertEvent(ctx, upsertRequest(calendarID, ""))
	refused, ok := status.FromError(err)
	if err == nil || !ok || refused.Code() != codes.InvalidArgument {
		return fmt.Errorf("an event without a summary: expected INVALID_ARGUMENT, got %v", err)
	}
	var fields []string
	reason := ""
	for _, detail := range refused.Details() {
		switch detail := detail.(type) {
		case *errdetails.ErrorInfo:
			reason = detail.GetReason()
		case *errdetails.BadRequest:
			for _, violation := range detail.GetFieldViolations() {
				fields = append(fields, violation.GetField())
				fmt.Printf("  field %s: %s\n", violation.GetField(), violation.GetDescription())
			}
		}
	}
	fmt.Printf("refused %s, reason %s\n", refused.Code(), reason)
	if reason == "" || len(fields) == 0 {
		return fmt.Errorf("the refusal carried no ErrorInfo reason or no field violation: %v", refused.Proto())
	}
	return nil
}

// followChanges writes an event, has the user delete it in their calendar
// app, and receives the deletion; then it disconnects, the user's calendar
// disconnects meanwhile, and a new stream resumed after the stored cursor
// still receives that change.
func followChanges(client calgatev1.CalendarWriteServiceClient, stream grpc.ServerStreamingClient[calgatev1.Change], sub, calendarID, fakeHost string) error {
	if err := waitForChannel(client); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := client.UpsertEvent(ctx, upsertRequest(calendarID, "Interview")); err != nil {
		return fmt.Errorf("UpsertEvent: %w", err)
	}
	if err := sandboxControl(ctx, fakeHost, "accounts/"+sub+"/events/delete",
		fmt.Sprintf(`{"calendar_id":%q,"event_id":%q}`, calendarID, eventID)); err != nil {
		return err
	}
	deleted, err := nextChange(stream)
	if err != nil {
		return err
	}
	if deleted.GetEvent().GetEventId() != eventID || deleted.GetEvent().GetKind() != calgatev1.EventChangeKind_EVENT_CHANGE_KIND_DELETED {
		return fmt.Errorf("expected the deletion of %s, got %v", eventID, deleted)
	}
	// A real consumer stores this cursor with the work it did.
	cursor := deleted.GetCursor()

	// The consumer goes away; meanwhile the user's calendar disconnects.
	if err := sandboxControl(ctx, fakeHost, "accounts/"+sub+"/profile/disconnect", "{}"); err != nil {
		return err
	}
	watchCtx, stopWatching := context.WithTimeout(context.Background(), 60*time.Second)
	defer stopWatching()
	resumed, err := client.WatchChanges(watchCtx, &calgatev1.WatchChangesRequest{After: cursor})
	if err != nil {
		return fmt.Errorf("WatchChanges after %s: %w", cursor, err)
	}
	disconnected, err := nextChange(resumed)
	if err != nil {
		return err
	}
	if disconnected.GetGrant().GetReason() != "PROFILE_DISCONNECTED" {
		return fmt.Errorf("expected PROFILE_DISCONNECTED after the cursor, got %v", disconnected)
	}
	fmt.Printf("relink at %s\n", disconnected.GetGrant().GetRelinkUrl())
	return nil
}

// waitForChannel waits for calgate to open the user's push notification
// channel (it does so in the background after the connect).
func waitForChannel(client calgatev1.CalendarWriteServiceClient) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		got, err := client.GetGrant(ctx, &calgatev1.GetGrantRequest{
			User: &calgatev1.GetGrantRequest_UserRef{UserRef: userRef},
		})
		cancel()
		if err != nil {
			return fmt.Errorf("GetGrant: %w", err)
		}
		if got.GetGrant().GetChangeTracking() == calgatev1.ChangeTracking_CHANGE_TRACKING_EVENTS {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return errors.New("the push notification channel never opened")
}

func nextChange(stream grpc.ServerStreamingClient[calgatev1.Change]) (*calgatev1.Change, error) {
	change, err := stream.Recv()
	if err != nil {
		return nil, fmt.Errorf("WatchChanges: %w", err)
	}
	switch {
	case change.GetGrant() != nil:
		fmt.Printf("%s: %s: grant %s (%s)\n", change.GetCursor(), change.GetUserRef(), change.GetGrant().GetStatus(), change.GetGrant().GetReason())
	case change.GetEvent() != nil:
		fmt.Printf("%s: %s: event %s %s\n", change.GetCursor(), change.GetUserRef(), change.GetEvent().GetEventId(), change.GetEvent().GetKind())
	default:
		fmt.Printf("%s: %s: %v\n", change.GetCursor(), change.GetUserRef(), change)
	}
	return change, nil
}

// sandboxControl plays the user in the sandbox: a POST to the embedded fake
// Cronofy's controls.
func sandboxControl(ctx context.Context, fakeHost, path, body string) error {
	request, err := http.NewRequestWithContext(ctx, http.MethodPost, fakeHost+"/sandbox/"+path, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	request.Header.Set("Content-Type", "application/json")
	response, err := http.DefaultClient.Do(request)
	if err != nil {
		return fmt.Errorf("sandbox control %s: %w", path, err)
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusOK {
		return fmt.Errorf("sandbox control %s answered %s", path, response.Status)
	}
	return nil
}

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}
