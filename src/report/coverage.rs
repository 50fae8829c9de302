//! The report's coverage statement: the UK Safer Internet Centre's "appropriate
//! filtering" criteria for education settings, and how far a DNS filter such as Warden
//! meets each, honestly: met, met in part (and why), or not something DNS filtering can
//! do, with what the school should add. Written once here so every report says the same.

/// How far Warden meets a criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Met {
    Yes,
    Partly,
    /// Not by DNS filtering: the school needs something else for it.
    No,
}

impl Met {
    pub fn as_str(self) -> &'static str {
        match self {
            Met::Yes => "Met",
            Met::Partly => "Partly met",
            Met::No => "Not met by DNS filtering",
        }
    }
}

/// One criterion and Warden's answer to it.
pub struct Criterion {
    pub criterion: &'static str,
    pub met: Met,
    pub how: &'static str,
}

/// Every criterion, in the order the UK Safer Internet Centre lists them.
pub const CRITERIA: &[Criterion] = &[
    Criterion {
        criterion: "Illegal content: the IWF child abuse image list",
        met: Met::Partly,
        how:
            "The IWF list is loaded from a private file or authenticated URL, locked on for every \
              group and beyond any allow entry. DNS blocks whole domains: the IWF's URL entries \
              on otherwise lawful domains cannot be blocked page by page, so pair Warden with \
              a filter that sees full URLs if you need them.",
    },
    Criterion {
        criterion:
            "Illegal content: the police-assessed list of unlawful terrorist content (CTIRU)",
        met: Met::Partly,
        how: "Loaded and locked like the IWF list, with the same limit: domain level only. \
              The self-test checks it blocks and that it is fresh (max_age).",
    },
    Criterion {
        criterion: "Inappropriate content categories (discrimination, drugs, extremism, gambling, \
                    malware and hacking, pornography, piracy, self-harm, violence)",
        met: Met::Yes,
        how: "Each category is a list the school chooses, blocked per group; the self-test \
              checks every category each group blocks. Coverage is as good as the lists: \
              review them in this report's list table.",
    },
    Criterion {
        criterion: "Age- and vulnerability-appropriate (differentiated) filtering",
        met: Met::Yes,
        how: "Groups (pupils, staff, guests) by address, MAC, signed-in user or enrolled \
              device, with schedules.",
    },
    Criterion {
        criterion: "Circumvention (VPNs, proxies, DNS over HTTPS)",
        met: Met::Partly,
        how: "Known DoH and VPN endpoints, Firefox's canary, iCloud Private Relay and DDR are \
              answered so devices keep using Warden. A VPN or resolver not on the lists, or \
              one reached by address, is not seen: block outbound DNS and DoT at the firewall.",
    },
    Criterion {
        criterion: "Control: the school can allow or block specific sites",
        met: Met::Yes,
        how: "Allow entries with a reason, an author and an optional end date, recorded in \
              this report; per-group allow and deny lists. Locked lists cannot be overridden.",
    },
    Criterion {
        criterion: "Contextual content filtering (pages and content analysed as they load)",
        met: Met::No,
        how: "DNS sees only the name of a site, never a page, a search term, an image or \
              generated content. Add a content-aware filter or monitoring on school devices.",
    },
    Criterion {
        criterion: "Filtering policy: a published rationale for what is blocked and why",
        met: Met::Partly,
        how: "This report lists what is filtered for whom, every change with its reason, and \
              the lists' sources; the school's own filtering policy document is still needed.",
    },
    Criterion {
        criterion: "Group and multi-site management",
        met: Met::Yes,
        how: "A trust sets one policy for every site and reviews every site's blocks centrally \
              ([fleet], PostgreSQL).",
    },
    Criterion {
        criterion: "Identification of users and devices",
        met: Met::Partly,
        how: "Devices by address, MAC and name; people through RADIUS accounting or a sign-in \
              feed when the network provides them. Without those, a shared device is known \
              only as a device.",
    },
    Criterion {
        criterion: "Mobile and app content",
        met: Met::Partly,
        how: "Apps on the school network are filtered by the names they look up (a blocked \
              app cannot connect); content inside an allowed app is not seen. Devices on \
              mobile data are filtered only when enrolled (DNS over TLS or HTTPS).",
    },
    Criterion {
        criterion: "Multiple language support",
        met: Met::Partly,
        how: "Lists block names whatever the language of the site; the categories are only as \
              complete as the lists are for non-English sites.",
    },
    Criterion {
        criterion: "Network level filtering (nothing needed on the device at school)",
        met: Met::Yes,
        how: "Warden is the network's DNS: every device on the network is filtered without \
              software on it.",
    },
    Criterion {
        criterion: "Remote devices get equivalent filtering",
        met: Met::Partly,
        how: "School devices enrolled with a profile use Warden over DNS over TLS or HTTPS from \
              anywhere, with their group's filtering; personal devices off site are not \
              filtered.",
    },
    Criterion {
        criterion: "Reporting mechanism for over- and under-blocking",
        met: Met::Partly,
        how: "Over-blocking: the block page says why a site was blocked and takes a \
              request to unblock it (no sign-in), which the admin approves or declines on the \
              dashboard; requests and decisions are counted in the site's report. Under-blocking (a \
              site that should be blocked and is not) has no form: staff and pupils need a \
              route to tell the e-safety lead, and the admin blocks it in a list file or a \
              `[[deny]]` list (or the trust's policy).",
    },
    Criterion {
        criterion: "Reports: clear historical information on sites accessed or attempted",
        met: Met::Partly,
        how: "Every block is kept in a tamper-evident log with time, device, address and, \
              where known, the person; allowed lookups only if the school turns that on \
              ([audit] log_allowed). DNS cannot say which page was read.",
    },
    Criterion {
        criterion: "Safe search",
        met: Met::Yes,
        how: "Google, Bing and DuckDuckGo are sent to their enforced safe-search service, and \
              YouTube to restricted mode, per group; the self-test checks both.",
    },
];
